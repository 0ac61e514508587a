#include "snapshot/state_capture.h"

#include <gtest/gtest.h>

#include <ctime>

namespace flurry {
namespace {

TEST(StateCaptureTest, RestoreGuestTakesTheSegmentBasesFromTheCpuState) {
  VmDescriptor d;
  d.identity.exe_path = "/app";
  d.memory.ram_size = 64ULL << 20;
  d.memory.image_start = 0x400000;
  d.memory.image_end = 0x401000;
  d.memory.brk_start = 0x401000;
  d.memory.brk = 0x401000;
  d.memory.mmap_top = 0x3000000;
  d.memory.stack_bottom = 0x3800000;
  d.vcpu.regs.fs_base = 0x4c6880;
  d.vcpu.regs.gs_base = 0xffff800000001000;
  Result<GuestState> state = RestoreGuest(d, ClockResume::kFromCapture);
  ASSERT_TRUE(state) << state.error().message();
  EXPECT_EQ(state->segment_bases.fs_base, 0x4c6880u);
  EXPECT_EQ(state->segment_bases.gs_base, 0xffff800000001000u);
  EXPECT_FALSE(state->segment_bases.dirty);  // already in the CPU state the backend restores
  EXPECT_EQ(state->identity.exe_path, "/app");
  EXPECT_EQ(state->memory_map.brk(), 0x401000u);
}

constexpr int64_t kSecond = 1'000'000'000;

VmDescriptor SmallDescriptor() {
  VmDescriptor d;
  d.identity.exe_path = "/app";
  d.memory.ram_size = 64ULL << 20;
  d.memory.image_start = 0x400000;
  d.memory.image_end = 0x401000;
  d.memory.brk_start = 0x401000;
  d.memory.brk = 0x401000;
  d.memory.mmap_top = 0x3000000;
  d.memory.stack_bottom = 0x3800000;
  return d;
}

// The guest's clock now, for a restored state.
int64_t GuestNow(const GuestState& state) {
  return GuestFromHostNs(HostClockNs(CLOCK_MONOTONIC), state.monotonic_offset_ns);
}

TEST(StateCaptureTest, CapturesTheGuestClockAtTheCaptureInstant) {
  GuestState state;
  state.monotonic_offset_ns = 5000 * kSecond;
  const int64_t before = HostClockNs(CLOCK_MONOTONIC);
  const int64_t realtime_before = HostClockNs(CLOCK_REALTIME);
  const VmDescriptor d = CaptureGuestState(state);
  ASSERT_TRUE(d.clock.has_value());
  EXPECT_GE(d.clock->guest_monotonic_ns, before + 5000 * kSecond);
  EXPECT_LE(d.clock->guest_monotonic_ns, HostClockNs(CLOCK_MONOTONIC) + 5000 * kSecond);
  EXPECT_GE(d.clock->host_realtime_ns, realtime_before);
  EXPECT_LE(d.clock->host_realtime_ns, HostClockNs(CLOCK_REALTIME));
}

// A snapshot restore continues from the captured value, however long ago the capture was.
TEST(StateCaptureTest, RestoreFromCaptureContinuesFromTheCapturedValue) {
  VmDescriptor d = SmallDescriptor();
  d.clock = ClockCapture{.guest_monotonic_ns = 77 * kSecond,
                         .host_realtime_ns = HostClockNs(CLOCK_REALTIME) - 600 * kSecond};
  Result<GuestState> state = RestoreGuest(d, ClockResume::kFromCapture);
  ASSERT_TRUE(state) << state.error().message();
  const int64_t now = GuestNow(*state);
  EXPECT_GE(now, 77 * kSecond);
  EXPECT_LT(now, 77 * kSecond + 5 * kSecond) << "the 10 minutes since the capture were counted";
}

// A clone continues from the captured value plus the wall-clock time since the capture.
TEST(StateCaptureTest, RestoreAsACloneAddsTheWallClockTime) {
  VmDescriptor d = SmallDescriptor();
  d.clock = ClockCapture{.guest_monotonic_ns = 77 * kSecond,
                         .host_realtime_ns = HostClockNs(CLOCK_REALTIME) - 600 * kSecond};
  Result<GuestState> state = RestoreGuest(d, ClockResume::kPlusWallClock);
  ASSERT_TRUE(state) << state.error().message();
  const int64_t now = GuestNow(*state);
  EXPECT_GE(now, 677 * kSecond);
  EXPECT_LT(now, 677 * kSecond + 5 * kSecond);
}

// A descriptor from before the clock was recorded: the host's monotonic clock, as then.
TEST(StateCaptureTest, RestoreWithoutAClockRecordReadsTheHostsClock) {
  VmDescriptor d = SmallDescriptor();
  d.start_time_ns = 123;
  for (ClockResume how : {ClockResume::kFromCapture, ClockResume::kPlusWallClock}) {
    Result<GuestState> state = RestoreGuest(d, how);
    ASSERT_TRUE(state) << state.error().message();
    EXPECT_EQ(state->monotonic_offset_ns, 0);
    EXPECT_EQ(state->start_time_ns, 123u);
  }
}

}  // namespace
}  // namespace flurry
