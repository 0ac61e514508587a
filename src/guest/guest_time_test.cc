// Tests for the guest clock offset arithmetic (guest_time.h).
#include "guest/guest_time.h"

#include <gtest/gtest.h>

namespace flurry {
namespace {

constexpr int64_t kSecond = 1'000'000'000;

TEST(GuestTime, OffsetClocksAreTheMonotonicDomain) {
  EXPECT_TRUE(IsOffsetClock(CLOCK_MONOTONIC));
  EXPECT_TRUE(IsOffsetClock(CLOCK_MONOTONIC_COARSE));
  EXPECT_TRUE(IsOffsetClock(CLOCK_MONOTONIC_RAW));
  EXPECT_TRUE(IsOffsetClock(CLOCK_BOOTTIME));
  EXPECT_FALSE(IsOffsetClock(CLOCK_REALTIME));
  EXPECT_FALSE(IsOffsetClock(CLOCK_REALTIME_COARSE));
  EXPECT_FALSE(IsOffsetClock(CLOCK_TAI));
  EXPECT_FALSE(IsOffsetClock(CLOCK_PROCESS_CPUTIME_ID));
}

TEST(GuestTime, TimespecConversions) {
  EXPECT_EQ(TimespecNs(timespec{3, 5}), 3 * kSecond + 5);
  const timespec ts = NsTimespec(7 * kSecond + 123);
  EXPECT_EQ(ts.tv_sec, 7);
  EXPECT_EQ(ts.tv_nsec, 123);
  const timespec negative = NsTimespec(-5);
  EXPECT_EQ(negative.tv_sec, 0);
  EXPECT_EQ(negative.tv_nsec, 0);
}

TEST(GuestTime, HostDeadlineSubtractsTheOffsetOnOffsetClocksOnly) {
  const timespec guest{100, 250};
  const timespec host = HostDeadline(CLOCK_MONOTONIC, guest, 40 * kSecond);
  EXPECT_EQ(host.tv_sec, 60);
  EXPECT_EQ(host.tv_nsec, 250);
  const timespec behind = HostDeadline(CLOCK_BOOTTIME, guest, -40 * kSecond);
  EXPECT_EQ(behind.tv_sec, 140);
  const timespec wall = HostDeadline(CLOCK_REALTIME, guest, 40 * kSecond);
  EXPECT_EQ(wall.tv_sec, 100);
  // A deadline before the host's epoch has passed: 0.
  const timespec past = HostDeadline(CLOCK_MONOTONIC, guest, 1000 * kSecond);
  EXPECT_EQ(past.tv_sec, 0);
  EXPECT_EQ(past.tv_nsec, 0);
  // Far-future deadlines stay far in the future (no overflow).
  const timespec never{INT64_MAX / 2, 0};
  EXPECT_EQ(HostDeadline(CLOCK_MONOTONIC, never, -1000 * kSecond).tv_sec, INT64_MAX / 2);
}

TEST(GuestTime, WallClockGapIsClamped) {
  EXPECT_EQ(WallClockGapNs(100 * kSecond, 103 * kSecond), 3 * kSecond);
  EXPECT_EQ(WallClockGapNs(100 * kSecond, 100 * kSecond), 0);
  EXPECT_EQ(WallClockGapNs(100 * kSecond, 90 * kSecond), 0) << "the wall clock went back";
  EXPECT_EQ(WallClockGapNs(0, kMaxWallClockGapNs), kMaxWallClockGapNs);
  EXPECT_EQ(WallClockGapNs(0, kMaxWallClockGapNs + 1), 0) << "beyond the bound: a wrong clock";
}

TEST(GuestTime, RestoreFromCaptureContinuesFromTheCapturedValue) {
  const ClockCapture captured{.guest_monotonic_ns = 500 * kSecond,
                              .host_realtime_ns = 1'000'000 * kSecond};
  // Restored 20 s of wall-clock time later on a host whose CLOCK_MONOTONIC reads 7000 s.
  const int64_t offset =
      RestoredOffsetNs(captured, ClockResume::kFromCapture, 7000 * kSecond, 1'000'020 * kSecond);
  EXPECT_EQ(GuestFromHostNs(7000 * kSecond, offset), 500 * kSecond);
  EXPECT_EQ(offset, -6500 * kSecond);
}

TEST(GuestTime, CloneAddsTheWallClockTimeSinceTheCapture) {
  const ClockCapture captured{.guest_monotonic_ns = 500 * kSecond,
                              .host_realtime_ns = 1'000'000 * kSecond};
  const int64_t offset =
      RestoredOffsetNs(captured, ClockResume::kPlusWallClock, 30 * kSecond, 1'000'020 * kSecond);
  EXPECT_EQ(GuestFromHostNs(30 * kSecond, offset), 520 * kSecond);
  // The new host's wall clock is behind the old one's: the clock continues from the capture.
  const int64_t skewed =
      RestoredOffsetNs(captured, ClockResume::kPlusWallClock, 30 * kSecond, 999'990 * kSecond);
  EXPECT_EQ(GuestFromHostNs(30 * kSecond, skewed), 500 * kSecond);
  // Two hours later (beyond the bound): not counted.
  const int64_t late =
      RestoredOffsetNs(captured, ClockResume::kPlusWallClock, 30 * kSecond, 1'007'200 * kSecond);
  EXPECT_EQ(GuestFromHostNs(30 * kSecond, late), 500 * kSecond);
}

TEST(GuestTime, CaptureNowReadsTheGuestClock) {
  const int64_t host_before = HostClockNs(CLOCK_MONOTONIC);
  const ClockCapture c = CaptureClockNow(1000 * kSecond);
  const int64_t host_after = HostClockNs(CLOCK_MONOTONIC);
  EXPECT_GE(c.guest_monotonic_ns, host_before + 1000 * kSecond);
  EXPECT_LE(c.guest_monotonic_ns, host_after + 1000 * kSecond);
  EXPECT_GT(c.host_realtime_ns, 0);
}

}  // namespace
}  // namespace flurry
