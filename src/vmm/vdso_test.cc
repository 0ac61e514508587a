#include "vmm/vdso.h"

#include <gtest/gtest.h>
#include <x86intrin.h>

#include <chrono>
#include <cstdlib>
#include <ctime>
#include <string>
#include <thread>

#include "arch/x86_64/layout.h"
#include "vmm/vdso/vvar.h"

namespace flurry {
namespace {

constexpr uint64_t kRam = 16 << 20;

uint64_t Now(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

flurry_vvar ReadVvar(const GuestMemory& memory) {
  flurry_vvar vvar{};
  EXPECT_TRUE(memory.ReadPhysical(x86::kVvarAddr, &vvar, sizeof vvar).has_value());
  return vvar;
}

// Guest CLOCK_MONOTONIC as the vDSO computes it from `vvar` at guest TSC `tsc`.
uint64_t GuestMonotonic(const flurry_vvar& vvar, uint64_t tsc) {
  const uint64_t delta = tsc > vvar.tsc_base ? tsc - vvar.tsc_base : 0;
  return vvar.monotonic_base_ns +
         static_cast<uint64_t>((static_cast<unsigned __int128>(delta) * vvar.ns_per_tsc_q32) >> 32);
}

TEST(Vdso, InstallsTheImageAndClearsTheClockPage) {
  auto memory = GuestMemory::Create(kRam).value();
  const uint64_t junk = ~0ULL;
  ASSERT_TRUE(memory.WritePhysical(x86::kVvarAddr, &junk, sizeof junk).has_value());
  EXPECT_EQ(InstallVdso(memory).value(), x86::kVdsoAddr);
  char magic[4];
  ASSERT_TRUE(memory.ReadPhysical(x86::kVdsoAddr, magic, 4).has_value());
  EXPECT_EQ(std::string(magic, 4),
            "\x7f"
            "ELF");
  EXPECT_EQ(ReadVvar(memory).magic, 0u);
}

TEST(GuestClock, StartWithAKnownFrequencyPublishes) {
  auto memory = GuestMemory::Create(kRam).value();
  GuestClock clock;
  const int64_t offset = 1'000'000;
  const uint64_t mono_before = Now(CLOCK_MONOTONIC);
  const uint64_t tsc_before = __rdtsc();
  ASSERT_TRUE(clock.Start(memory, offset, 2'500'000, 0).has_value());
  const uint64_t tsc_after = __rdtsc();
  const uint64_t mono_after = Now(CLOCK_MONOTONIC);
  const flurry_vvar vvar = ReadVvar(memory);
  EXPECT_EQ(vvar.magic, FLURRY_VVAR_MAGIC);
  EXPECT_EQ(vvar.ns_per_tsc_q32, (1'000'000ULL << 32) / 2'500'000);  // 0.4 ns per tick
  EXPECT_GE(vvar.tsc_base, tsc_before + offset);
  EXPECT_LE(vvar.tsc_base, tsc_after + offset);
  EXPECT_GE(vvar.monotonic_base_ns, mono_before);
  EXPECT_LE(vvar.monotonic_base_ns, mono_after);
  // The offsets relate the other clocks to CLOCK_MONOTONIC (loosely: the clocks move on).
  const int64_t realtime = static_cast<int64_t>(Now(CLOCK_REALTIME));
  EXPECT_LT(
      std::llabs(static_cast<int64_t>(vvar.monotonic_base_ns) + vvar.realtime_offset_ns - realtime),
      60'000'000'000LL);
  EXPECT_GE(vvar.boottime_offset_ns, 0);
}

// The vvar page holds guest time: CLOCK_MONOTONIC, _RAW and BOOTTIME carry the guest's offset,
// the wall clocks do not.
TEST(GuestClock, PublishesGuestTimeWithTheMonotonicOffset) {
  for (const int64_t offset :
       {int64_t{1'000'000'000'000}, -static_cast<int64_t>(Now(CLOCK_MONOTONIC) / 2)}) {
    auto memory = GuestMemory::Create(kRam).value();
    GuestClock clock;
    const uint64_t mono_before = Now(CLOCK_MONOTONIC);
    const int64_t realtime_before = static_cast<int64_t>(Now(CLOCK_REALTIME));
    ASSERT_TRUE(clock.Start(memory, 0, 2'500'000, offset).has_value());
    const int64_t realtime_after = static_cast<int64_t>(Now(CLOCK_REALTIME));
    const uint64_t mono_after = Now(CLOCK_MONOTONIC);
    const flurry_vvar vvar = ReadVvar(memory);
    ASSERT_EQ(vvar.magic, FLURRY_VVAR_MAGIC);
    EXPECT_GE(vvar.monotonic_base_ns, mono_before + offset) << offset;
    EXPECT_LE(vvar.monotonic_base_ns, mono_after + offset) << offset;
    // CLOCK_REALTIME at the base instant is the host's (loosely: the clocks move on).
    const int64_t realtime = static_cast<int64_t>(vvar.monotonic_base_ns) + vvar.realtime_offset_ns;
    EXPECT_GE(realtime, realtime_before - 1'000'000'000LL) << offset;
    EXPECT_LE(realtime, realtime_after + 1'000'000'000LL) << offset;
    const int64_t tai = static_cast<int64_t>(vvar.monotonic_base_ns) + vvar.tai_offset_ns;
    EXPECT_LT(std::llabs(tai - realtime), 100'000'000'000LL) << offset;  // TAI - UTC: seconds
    // BOOTTIME and RAW are near the guest's monotonic clock, not the host's.
    EXPECT_GE(vvar.boottime_offset_ns, 0);
    EXPECT_LT(std::llabs(vvar.raw_offset_ns), 60'000'000'000LL);
  }
}

// One test: the calibration is process-wide state (every re-base measures the frequency
// and keeps it for the clocks started later: in a run that repeats the tests, it is known).
TEST(GuestClock, UnknownFrequencyIsCalibratedBeforePublishing) {
  auto memory = GuestMemory::Create(kRam).value();
  GuestClock clock;
  ASSERT_TRUE(clock.Start(memory, 0, 0, 0).has_value());
  if (ReadVvar(memory).magic != 0) GTEST_SKIP() << "an earlier test measured the frequency";
  // Calibration needs the host's clocks to move on by 20 ms.
  std::this_thread::sleep_for(std::chrono::milliseconds(25));
  clock.Refresh();
  const flurry_vvar vvar = ReadVvar(memory);
  ASSERT_EQ(vvar.magic, FLURRY_VVAR_MAGIC);
  // 100 MHz .. 20 GHz, the range the calibration accepts.
  EXPECT_LE(vvar.ns_per_tsc_q32, 10ULL << 32);
  EXPECT_GE(vvar.ns_per_tsc_q32, (1ULL << 32) / 20);
  // A second clock in this process starts with the measured frequency.
  auto other = GuestMemory::Create(kRam).value();
  GuestClock second;
  ASSERT_TRUE(second.Start(other, 0, 0, 0).has_value());
  EXPECT_EQ(ReadVvar(other).magic, FLURRY_VVAR_MAGIC);
  // (Passed on in whole kHz: within a few parts per million.)
  EXPECT_NEAR(static_cast<double>(ReadVvar(other).ns_per_tsc_q32),
              static_cast<double>(vvar.ns_per_tsc_q32), vvar.ns_per_tsc_q32 * 1e-5);
}

// The TSC frequency as the host's clocks measure it over `ms` milliseconds (32.32 ns per tick).
double MeasuredNsPerTickQ32(int ms) {
  const uint64_t tsc0 = __rdtsc();
  const uint64_t ns0 = Now(CLOCK_MONOTONIC);
  std::this_thread::sleep_for(std::chrono::milliseconds(ms));
  const uint64_t tsc1 = __rdtsc();
  const uint64_t ns1 = Now(CLOCK_MONOTONIC);
  return static_cast<double>(ns1 - ns0) / static_cast<double>(tsc1 - tsc0) * 4294967296.0;
}

// Refreshes until a re-base (a new tsc_base) was published, for up to 20 s.
flurry_vvar NextBase(GuestClock& clock, const GuestMemory& memory) {
  const flurry_vvar first = ReadVvar(memory);
  flurry_vvar next = first;
  for (int i = 0; i < 2000 && next.tsc_base == first.tsc_base; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
    clock.Refresh();
    next = ReadVvar(memory);
  }
  EXPECT_NE(next.tsc_base, first.tsc_base) << "Refresh never re-based the clock";
  return next;
}

// A clock started with a TSC frequency 2% too low runs ahead of the host's: the re-base goes on
// from where it is (never back) at a rate below the host's, so it is in step again a second
// later, not further ahead.
TEST(GuestClock, AClockAheadIsSlowedBackIntoStep) {
  const double actual = MeasuredNsPerTickQ32(50);
  const auto khz = static_cast<uint64_t>(1e6 * 4294967296.0 / actual);
  auto memory = GuestMemory::Create(kRam).value();
  GuestClock clock;
  ASSERT_TRUE(clock.Start(memory, 0, khz * 98 / 100, 0).has_value());
  const flurry_vvar first = ReadVvar(memory);
  const flurry_vvar next = NextBase(clock, memory);
  EXPECT_GE(next.monotonic_base_ns, GuestMonotonic(first, next.tsc_base));  // never back
  EXPECT_GT(next.monotonic_base_ns, Now(CLOCK_MONOTONIC) - 1'000'000);      // it was ahead
  EXPECT_LT(static_cast<double>(next.ns_per_tsc_q32), actual * 0.999);      // now slower
  EXPECT_GT(static_cast<double>(next.ns_per_tsc_q32), actual * 0.9);
}

// A clock started with a TSC frequency 2% too high falls behind: the re-base steps it forward to
// the host's clock at the measured rate.
TEST(GuestClock, AClockBehindStepsForward) {
  const double actual = MeasuredNsPerTickQ32(50);
  const auto khz = static_cast<uint64_t>(1e6 * 4294967296.0 / actual);
  auto memory = GuestMemory::Create(kRam).value();
  GuestClock clock;
  ASSERT_TRUE(clock.Start(memory, 0, khz * 102 / 100, 0).has_value());
  const flurry_vvar first = ReadVvar(memory);
  const uint64_t before = Now(CLOCK_MONOTONIC);
  const flurry_vvar next = NextBase(clock, memory);
  const uint64_t after = Now(CLOCK_MONOTONIC);
  EXPECT_GT(next.monotonic_base_ns, GuestMonotonic(first, next.tsc_base));  // forward
  EXPECT_GE(next.monotonic_base_ns, before);
  EXPECT_LE(next.monotonic_base_ns, after);
  EXPECT_NEAR(static_cast<double>(next.ns_per_tsc_q32), actual, actual * 0.01);
}

TEST(GuestClock, RefreshNeverMovesMonotonicBackwards) {
  auto memory = GuestMemory::Create(kRam).value();
  GuestClock clock;
  // A guest clock that runs far too fast (100 MHz claimed, the TSC ticks faster): extrapolating
  // the old base gives a later time than the host's, and the new base must not go back.
  ASSERT_TRUE(clock.Start(memory, 0, 100'000, 0).has_value());
  const flurry_vvar first = ReadVvar(memory);
  ASSERT_EQ(first.magic, FLURRY_VVAR_MAGIC);
  // A re-base is due after 1e8 TSC ticks (NextBase waits up to 20 s for it).
  const flurry_vvar next = NextBase(clock, memory);
  ASSERT_NE(next.tsc_base, first.tsc_base) << "Refresh never re-based the clock";
  EXPECT_GE(next.monotonic_base_ns, GuestMonotonic(first, next.tsc_base));
  EXPECT_LT(next.ns_per_tsc_q32, first.ns_per_tsc_q32);  // the measured rate, slowed
  EXPECT_EQ(next.magic, FLURRY_VVAR_MAGIC);
}

// A re-base continues the guest's clock from its extrapolated guest time: the offset is
// applied once, not again at every refresh.
TEST(GuestClock, RefreshKeepsTheOffset) {
  auto memory = GuestMemory::Create(kRam).value();
  GuestClock clock;
  const int64_t offset = 1'000'000'000'000;  // 1000 s
  // As above, a fast guest clock: the re-base extrapolates the old base.
  ASSERT_TRUE(clock.Start(memory, 0, 100'000, offset).has_value());
  const flurry_vvar first = ReadVvar(memory);
  ASSERT_EQ(first.magic, FLURRY_VVAR_MAGIC);
  const flurry_vvar next = NextBase(clock, memory);
  ASSERT_NE(next.tsc_base, first.tsc_base) << "Refresh never re-based the clock";
  const uint64_t extrapolated = GuestMonotonic(first, next.tsc_base);
  EXPECT_GE(next.monotonic_base_ns, extrapolated);
  EXPECT_LT(next.monotonic_base_ns, extrapolated + 1'000'000'000) << "the offset was added again";
}

// A forked process or clone starts a clock of its own from the one it had: never behind it,
// even when that one ran a little ahead of the host's.
TEST(GuestClock, StartsNoEarlierThanTheClockBefore) {
  auto memory = GuestMemory::Create(kRam).value();
  GuestClock before;
  EXPECT_EQ(before.GuestNowNs(), 0u);  // nothing published
  const int64_t offset = 7'000'000'000;
  ASSERT_TRUE(before.Start(memory, 0, 2'000'000, offset).has_value());
  const uint64_t ahead = before.GuestNowNs() + 500'000'000;  // half a second ahead
  GuestClock after;
  ASSERT_TRUE(after.Start(memory, 0, 2'000'000, offset, ahead).has_value());
  EXPECT_GE(ReadVvar(memory).monotonic_base_ns, ahead);
  EXPECT_GE(after.GuestNowNs(), ahead);
  // Behind the host's: the host's it is.
  GuestClock third;
  const uint64_t host_guest = Now(CLOCK_MONOTONIC) + offset;
  ASSERT_TRUE(third.Start(memory, 0, 2'000'000, offset, 1).has_value());
  EXPECT_GE(ReadVvar(memory).monotonic_base_ns, host_guest);
  EXPECT_LT(ReadVvar(memory).monotonic_base_ns, host_guest + 1'000'000'000);
}

TEST(GuestClock, RefreshWithoutStartDoesNothing) {
  GuestClock clock;
  clock.Refresh();  // no memory: must not crash
}

}  // namespace
}  // namespace flurry
