#include "guest/guest_time.h"

namespace flurry {

namespace {
constexpr int64_t kNsPerSecond = 1'000'000'000;
}  // namespace

bool IsOffsetClock(clockid_t clock) {
  switch (clock) {
    case CLOCK_MONOTONIC:
    case CLOCK_MONOTONIC_COARSE:
    case CLOCK_MONOTONIC_RAW:
    case CLOCK_BOOTTIME:
      return true;
    default:
      return false;
  }
}

int64_t HostClockNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return TimespecNs(ts);
}

int64_t TimespecNs(const timespec& ts) {
  return static_cast<int64_t>(ts.tv_sec) * kNsPerSecond + ts.tv_nsec;
}

timespec NsTimespec(int64_t ns) {
  if (ns < 0) ns = 0;
  return timespec{.tv_sec = static_cast<time_t>(ns / kNsPerSecond),
                  .tv_nsec = static_cast<long>(ns % kNsPerSecond)};
}

timespec HostDeadline(clockid_t clock, const timespec& guest_deadline, int64_t offset_ns) {
  if (!IsOffsetClock(clock) || offset_ns == 0) return guest_deadline;
  // A deadline past 2^62 ns (146 years) is as good as never, converted or not; below it the
  // arithmetic cannot overflow (offsets are below 2^62 in magnitude: validated descriptors).
  constexpr int64_t kFarSeconds = (int64_t{1} << 62) / kNsPerSecond;
  if (guest_deadline.tv_sec >= kFarSeconds) return guest_deadline;
  return NsTimespec(HostFromGuestNs(TimespecNs(guest_deadline), offset_ns));
}

int64_t GuestClockNs(clockid_t clock, int64_t offset_ns) {
  const int64_t host = HostClockNs(clock);
  return IsOffsetClock(clock) ? GuestFromHostNs(host, offset_ns) : host;
}

ClockCapture CaptureClockNow(int64_t offset_ns) {
  ClockCapture c;
  c.guest_monotonic_ns = GuestMonotonicNs(offset_ns);
  c.host_realtime_ns = HostClockNs(CLOCK_REALTIME);
  return c;
}

int64_t WallClockGapNs(int64_t captured_realtime_ns, int64_t now_realtime_ns) {
  if (now_realtime_ns <= captured_realtime_ns) return 0;
  // Both are >= 0 (validated descriptor, host clock), so the difference cannot overflow.
  const int64_t gap = now_realtime_ns - captured_realtime_ns;
  return gap > kMaxWallClockGapNs ? 0 : gap;
}

int64_t RestoredOffsetNs(const ClockCapture& captured, ClockResume how, int64_t now_monotonic_ns,
                         int64_t now_realtime_ns) {
  int64_t guest_now = captured.guest_monotonic_ns;
  if (how == ClockResume::kPlusWallClock) {
    guest_now += WallClockGapNs(captured.host_realtime_ns, now_realtime_ns);
  }
  return guest_now - now_monotonic_ns;
}

}  // namespace flurry
