#include "snapshot/state_capture.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <csignal>
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

// A pipe cannot be reopened: its ends are captured as pipe ends without a path, and restored
// as ends of a new pipe whose other end is closed.
TEST(StateCaptureTest, PipeEndsRestoreWithoutAPeer) {
  signal(SIGPIPE, SIG_IGN);  // as the VMM process does
  FdTable fds;
  int ends[2];
  ASSERT_EQ(pipe2(ends, O_CLOEXEC | O_NONBLOCK), 0);
  OpenFile reader;
  reader.kind = FileKind::kPipe;
  reader.host.Reset(ends[0]);
  reader.flags = O_RDONLY;
  OpenFile writer;
  writer.kind = FileKind::kPipe;
  writer.host.Reset(ends[1]);
  writer.flags = O_WRONLY | O_NONBLOCK;
  ASSERT_EQ(*fds.Install(std::move(reader), false), 3);
  ASSERT_EQ(*fds.Install(std::move(writer), true), 4);
  ASSERT_EQ(write(ends[1], "unread", 6), 6);  // not carried over

  VmDescriptor d = SmallDescriptor();
  d.files = CaptureFiles(fds);
  ASSERT_EQ(d.files.fds.size(), 5u);
  const FdRecord& captured = d.files.fds[4];
  EXPECT_EQ(captured.kind, FileKind::kPipe);
  EXPECT_EQ(captured.path, "");
  EXPECT_EQ(captured.flags, O_WRONLY | O_NONBLOCK);
  EXPECT_TRUE(captured.cloexec);
  EXPECT_EQ(captured.offset, 0);

  Result<GuestState> state = RestoreGuest(d, ClockResume::kFromCapture);  // no root needed
  ASSERT_TRUE(state) << state.error().message();
  const OpenFile* read_end = *state->fds.Get(3);
  const OpenFile* write_end = *state->fds.Get(4);
  EXPECT_EQ(read_end->kind, FileKind::kPipe);
  EXPECT_EQ(read_end->flags, O_RDONLY);
  EXPECT_EQ(*state->fds.GetCloexec(4), true);
  char byte;
  EXPECT_EQ(read(read_end->host_fd(), &byte, 1), 0);  // end of file, not the old bytes
  EXPECT_EQ(write(write_end->host_fd(), "x", 1), -1);
  EXPECT_EQ(errno, EPIPE);
  for (const OpenFile* end : {read_end, write_end}) {
    EXPECT_NE(fcntl(end->host_fd(), F_GETFL) & O_NONBLOCK, 0);
    EXPECT_EQ(fcntl(end->host_fd(), F_GETFD), FD_CLOEXEC);
  }
}

}  // namespace
}  // namespace flurry
