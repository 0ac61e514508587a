// Interval timers: alarm, setitimer and getitimer for ITIMER_REAL, kept in
// SignalState::real_timer on the guest's CLOCK_MONOTONIC. The VMM raises SIGALRM when the
// deadline passes (src/vmm/vm_signals.cc, Vm::CheckTimers). ITIMER_VIRTUAL and ITIMER_PROF
// (CPU-time timers) are not implemented: EINVAL.
#include <sys/syscall.h>
#include <sys/time.h>

#include <algorithm>
#include <ctime>

#include "guest/guest_time.h"
#include "guest/syscall.h"

namespace flurry {
namespace {

constexpr int64_t kNsPerUs = 1000;
constexpr int64_t kNsPerSecond = 1000 * 1000 * 1000;

struct GuestItimerval {  // struct itimerval: interval, then value (timevals)
  int64_t interval_sec, interval_usec, value_sec, value_usec;
};
static_assert(sizeof(GuestItimerval) == 32);

int64_t RemainingNs(const GuestState& state) {
  if (!state.signals.real_timer.armed()) return 0;
  // Expired but not yet raised: Linux reports the smallest nonzero time.
  return std::max<int64_t>(
      state.signals.real_timer.deadline_ns - GuestMonotonicNs(state.monotonic_offset_ns), kNsPerUs);
}

GuestItimerval Current(const GuestState& state) {
  const int64_t left = RemainingNs(state);
  const int64_t every = state.signals.real_timer.interval_ns;
  // Truncated to microseconds, as Linux (RemainingNs keeps a pending one at 1 µs at least).
  return {every / kNsPerSecond, every % kNsPerSecond / kNsPerUs, left / kNsPerSecond,
          left % kNsPerSecond / kNsPerUs};
}

void Arm(GuestState& state, int64_t value_ns, int64_t interval_ns) {
  state.signals.real_timer.deadline_ns =
      value_ns == 0 ? 0 : GuestMonotonicNs(state.monotonic_offset_ns) + value_ns;
  state.signals.real_timer.interval_ns = value_ns == 0 ? 0 : interval_ns;
}

SyscallResult SysGetitimer(SyscallContext& c, const SyscallArgs& a) {
  if (a.arg[0] != ITIMER_REAL) return SyscallResult::Errno(EINVAL);
  if (auto r = c.memory.WriteObject(a.arg[1], Current(c.state)); !r) return ErrnoFrom(r.error());
  return SyscallResult::Return(0);
}

SyscallResult SysSetitimer(SyscallContext& c, const SyscallArgs& a) {
  if (a.arg[0] != ITIMER_REAL) return SyscallResult::Errno(EINVAL);
  GuestItimerval next{};
  if (a.arg[1] != 0) {
    auto value = c.memory.ReadObject<GuestItimerval>(a.arg[1]);
    if (!value) return ErrnoFrom(value.error());
    next = *value;
    for (int64_t usec : {next.interval_usec, next.value_usec}) {
      if (usec < 0 || usec >= 1000000) return SyscallResult::Errno(EINVAL);
    }
    if (next.interval_sec < 0 || next.value_sec < 0) return SyscallResult::Errno(EINVAL);
    // Linux takes any size and saturates: so does flurry, at ~292 years.
    constexpr int64_t kMaxSeconds = INT64_MAX / kNsPerSecond / 2;
    next.value_sec = std::min(next.value_sec, kMaxSeconds);
    next.interval_sec = std::min(next.interval_sec, kMaxSeconds);
  }
  if (a.arg[2] != 0) {
    if (auto r = c.memory.WriteObject(a.arg[2], Current(c.state)); !r) return ErrnoFrom(r.error());
  }
  Arm(c.state, next.value_sec * kNsPerSecond + next.value_usec * kNsPerUs,
      next.interval_sec * kNsPerSecond + next.interval_usec * kNsPerUs);
  return SyscallResult::Return(0);
}

SyscallResult SysAlarm(SyscallContext& c, const SyscallArgs& a) {
  // The seconds left of the previous alarm, rounded to the nearest, at least 1 if armed.
  const int64_t left = RemainingNs(c.state);
  int64_t seconds = left / kNsPerSecond;
  if (left % kNsPerSecond >= kNsPerSecond / 2 || (seconds == 0 && left > 0)) ++seconds;
  Arm(c.state, static_cast<int64_t>(static_cast<uint32_t>(a.arg[0])) * kNsPerSecond, 0);
  return SyscallResult::Return(seconds);
}

}  // namespace

void RegisterTimerSyscalls(SyscallTable& table) {
  table.Register(SYS_getitimer, SysGetitimer);
  table.Register(SYS_setitimer, SysSetitimer);
  table.Register(SYS_alarm, SysAlarm);
}

}  // namespace flurry
