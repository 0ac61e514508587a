// POSIX per-process timers: timer_create, timer_settime, timer_gettime, timer_getoverrun and
// timer_delete, kept in SignalState::timers (src/guest/posix_timers.h). The VMM raises their
// signals when they are due (src/vmm/vm_signals.cc, Vm::CheckTimers).
//
// Clocks: CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME and CLOCK_TAI (the guest's, as
// clock_gettime reads them). CLOCK_MONOTONIC_RAW and the _COARSE clocks have no timers on
// Linux either (EOPNOTSUPP); the _ALARM clocks need CAP_WAKE_ALARM, which a guest has not
// (EPERM); the CPU-time clocks are not implemented (EINVAL, as an unknown clock).
#include <sys/syscall.h>

#include <algorithm>
#include <csignal>
#include <ctime>

#include "guest/guest_time.h"
#include "guest/posix_timers.h"
#include "guest/syscall.h"

namespace flurry {
namespace {

constexpr int64_t kNsPerSecond = 1000 * 1000 * 1000;
constexpr int kTimerAbstime = 1;  // TIMER_ABSTIME

// struct sigevent (x86-64): sigev_value, sigev_signo, sigev_notify, then a union whose first
// member is the thread id of SIGEV_THREAD_ID.
struct GuestSigevent {
  uint64_t value;
  int32_t signo;
  int32_t notify;
  int32_t tid;
  int32_t pad[11];
};
static_assert(sizeof(GuestSigevent) == 64);

struct GuestTimespec {
  int64_t sec, nsec;
};
struct GuestItimerspec {  // struct itimerspec: interval, then value
  GuestTimespec interval, value;
};
static_assert(sizeof(GuestItimerspec) == 32);

// The errno of timer_create for `clock`, or 0 when it has timers.
int ClockError(int64_t clock) {
  if (clock >= 0 && clock <= INT32_MAX && IsTimerClock(static_cast<clockid_t>(clock))) return 0;
  switch (clock) {
    case CLOCK_MONOTONIC_RAW:
    case CLOCK_REALTIME_COARSE:
    case CLOCK_MONOTONIC_COARSE:
      return EOPNOTSUPP;
    case CLOCK_REALTIME_ALARM:
    case CLOCK_BOOTTIME_ALARM:
      return EPERM;
    default:  // unknown, or a CPU-time clock (CLOCK_*_CPUTIME_ID, clock_getcpuclockid's)
      return EINVAL;
  }
}

bool ValidTimespec(const GuestTimespec& ts) {
  return ts.sec >= 0 && ts.nsec >= 0 && ts.nsec < kNsPerSecond;
}

// Linux takes any size and saturates: so does flurry, at ~146 years (deadlines stay in 2^63).
int64_t SaturatedNs(const GuestTimespec& ts) {
  constexpr int64_t kMaxSeconds = INT64_MAX / kNsPerSecond / 2;
  return std::min(ts.sec, kMaxSeconds) * kNsPerSecond + ts.nsec;
}

GuestItimerspec ToItimerspec(const TimerSetting& setting) {
  return {{setting.interval_ns / kNsPerSecond, setting.interval_ns % kNsPerSecond},
          {setting.value_ns / kNsPerSecond, setting.value_ns % kNsPerSecond}};
}

PosixTimer* TimerOf(SyscallContext& c, uint64_t arg) {
  return FindTimer(c.state.signals, static_cast<int32_t>(arg));  // timer_t is an int
}

SyscallResult SysTimerCreate(SyscallContext& c, const SyscallArgs& a) {
  const auto clock = static_cast<int64_t>(static_cast<int32_t>(a.arg[0]));
  GuestSigevent event{};
  if (a.arg[1] != 0) {
    auto read = c.memory.ReadObject<GuestSigevent>(a.arg[1]);
    if (!read) return ErrnoFrom(read.error());
    event = *read;
  }
  if (const int err = ClockError(clock); err != 0) return SyscallResult::Errno(err);
  const int32_t id = FreeTimerId(c.state.signals);
  if (id < 0) return SyscallResult::Errno(EAGAIN);
  PosixTimer timer{.id = id, .clock = static_cast<int32_t>(clock)};
  if (a.arg[1] == 0) {  // SIGEV_SIGNAL with SIGALRM, the timer's id as its value
    timer.notify = kSigevSignal;
    timer.signal = SIGALRM;
    timer.value = static_cast<uint64_t>(id);
  } else {
    switch (event.notify) {
      case kSigevThreadId:
        if (event.tid <= 0 ||
            (event.tid != c.state.identity.tid && c.state.threads.Find(event.tid) == nullptr)) {
          return SyscallResult::Errno(EINVAL);  // not a thread of this process
        }
        [[fallthrough]];
      case kSigevSignal:
      case kSigevThread:  // glibc builds SIGEV_THREAD on SIGEV_THREAD_ID; the kernel signals
        if (event.signo <= 0 || event.signo > SignalState::kSignals) {
          return SyscallResult::Errno(EINVAL);
        }
        break;
      case kSigevNone:
        break;
      default:
        return SyscallResult::Errno(EINVAL);
    }
    timer.notify = event.notify == kSigevThread ? kSigevSignal : event.notify;
    timer.signal = event.notify == kSigevNone ? 0 : event.signo;
    timer.tid = event.notify == kSigevThreadId ? event.tid : 0;
    timer.value = event.value;
    // SIGKILL and SIGSTOP act on the whole process (as tgkill's do).
    if (timer.signal == SIGKILL || timer.signal == SIGSTOP) {
      timer.notify = kSigevSignal;
      timer.tid = 0;
    }
  }
  if (auto r = c.memory.WriteObject(a.arg[2], id); !r) return ErrnoFrom(r.error());
  InsertTimer(c.state.signals, timer);
  return SyscallResult::Return(0);
}

SyscallResult SysTimerSettime(SyscallContext& c, const SyscallArgs& a) {
  if (a.arg[2] == 0) return SyscallResult::Errno(EINVAL);
  auto next = c.memory.ReadObject<GuestItimerspec>(a.arg[2]);
  if (!next) return ErrnoFrom(next.error());
  if (!ValidTimespec(next->interval) || !ValidTimespec(next->value)) {
    return SyscallResult::Errno(EINVAL);
  }
  PosixTimer* timer = TimerOf(c, a.arg[0]);
  if (timer == nullptr) return SyscallResult::Errno(EINVAL);
  const int64_t now = GuestClockNs(timer->clock, c.state.monotonic_offset_ns);
  const GuestItimerspec old = ToItimerspec(TimerRemaining(*timer, now));
  ArmTimer(*timer, SaturatedNs(next->value), SaturatedNs(next->interval),
           (a.arg[1] & kTimerAbstime) != 0, now);
  timer->overrun = 0;
  if (a.arg[3] != 0) {
    if (auto r = c.memory.WriteObject(a.arg[3], old); !r) return ErrnoFrom(r.error());
  }
  return SyscallResult::Return(0);
}

SyscallResult SysTimerGettime(SyscallContext& c, const SyscallArgs& a) {
  const PosixTimer* timer = TimerOf(c, a.arg[0]);
  if (timer == nullptr) return SyscallResult::Errno(EINVAL);
  const int64_t now = GuestClockNs(timer->clock, c.state.monotonic_offset_ns);
  if (auto r = c.memory.WriteObject(a.arg[1], ToItimerspec(TimerRemaining(*timer, now))); !r) {
    return ErrnoFrom(r.error());
  }
  return SyscallResult::Return(0);
}

SyscallResult SysTimerGetoverrun(SyscallContext& c, const SyscallArgs& a) {
  const PosixTimer* timer = TimerOf(c, a.arg[0]);
  if (timer == nullptr) return SyscallResult::Errno(EINVAL);
  return SyscallResult::Return(timer->overrun);
}

SyscallResult SysTimerDelete(SyscallContext& c, const SyscallArgs& a) {
  const PosixTimer* timer = TimerOf(c, a.arg[0]);
  if (timer == nullptr) return SyscallResult::Errno(EINVAL);
  DeleteTimer(c.state, timer->id);
  return SyscallResult::Return(0);
}

}  // namespace

void RegisterPosixTimerSyscalls(SyscallTable& table) {
  table.Register(SYS_timer_create, SysTimerCreate);
  table.Register(SYS_timer_settime, SysTimerSettime);
  table.Register(SYS_timer_gettime, SysTimerGettime);
  table.Register(SYS_timer_getoverrun, SysTimerGetoverrun);
  table.Register(SYS_timer_delete, SysTimerDelete);
}

}  // namespace flurry
