// Time syscalls, answered from the host's clocks: clock_gettime, clock_getres, gettimeofday,
// time, nanosleep, clock_nanosleep. (The vDSO answers the common ones without an exit.) The
// monotonic-domain clocks are the host's plus GuestState::monotonic_offset_ns (guest_time.h).
#include <sys/syscall.h>
#include <sys/time.h>

#include <algorithm>
#include <ctime>

#include "guest/guest_time.h"
#include "guest/syscall.h"

namespace flurry {
namespace {

bool ValidClock(uint64_t id) {
  switch (id) {
    case CLOCK_REALTIME:
    case CLOCK_MONOTONIC:
    case CLOCK_PROCESS_CPUTIME_ID:
    case CLOCK_THREAD_CPUTIME_ID:
    case CLOCK_MONOTONIC_RAW:
    case CLOCK_REALTIME_COARSE:
    case CLOCK_MONOTONIC_COARSE:
    case CLOCK_BOOTTIME:
    case CLOCK_TAI:
      return true;
    default:
      return false;
  }
}

SyscallResult SysClockGettime(SyscallContext& c, const SyscallArgs& a) {
  if (!ValidClock(a.arg[0])) return SyscallResult::Errno(EINVAL);
  const auto clock = static_cast<clockid_t>(a.arg[0]);
  timespec ts{};
  clock_gettime(clock, &ts);
  if (IsOffsetClock(clock)) {
    ts = NsTimespec(GuestFromHostNs(TimespecNs(ts), c.state.monotonic_offset_ns));
  }
  if (auto r = c.memory.WriteObject(a.arg[1], ts); !r) return ErrnoFrom(r.error());
  return SyscallResult::Return(0);
}

SyscallResult SysClockGetres(SyscallContext& c, const SyscallArgs& a) {
  if (!ValidClock(a.arg[0])) return SyscallResult::Errno(EINVAL);
  if (a.arg[1] == 0) return SyscallResult::Return(0);
  timespec ts{};
  clock_getres(static_cast<clockid_t>(a.arg[0]), &ts);
  if (auto r = c.memory.WriteObject(a.arg[1], ts); !r) return ErrnoFrom(r.error());
  return SyscallResult::Return(0);
}

SyscallResult SysGettimeofday(SyscallContext& c, const SyscallArgs& a) {
  timeval tv{};
  gettimeofday(&tv, nullptr);
  if (a.arg[0] != 0) {
    if (auto r = c.memory.WriteObject(a.arg[0], tv); !r) return ErrnoFrom(r.error());
  }
  if (a.arg[1] != 0) {
    struct {
      int32_t minuteswest = 0, dsttime = 0;
    } tz;
    if (auto r = c.memory.WriteObject(a.arg[1], tz); !r) return ErrnoFrom(r.error());
  }
  return SyscallResult::Return(0);
}

SyscallResult SysTime(SyscallContext& c, const SyscallArgs& a) {
  int64_t now = ::time(nullptr);
  if (a.arg[0] != 0) {
    if (auto r = c.memory.WriteObject(a.arg[0], now); !r) return ErrnoFrom(r.error());
  }
  return SyscallResult::Return(now);
}

// With other threads, a sleep parks the caller (the VMM runs the others) until a deadline on
// the guest's CLOCK_MONOTONIC.
SyscallResult SleepAmongThreads(SyscallContext& c, clockid_t clock, int flags,
                                const timespec& request, uint64_t remain_addr) {
  constexpr int64_t kMaxSeconds = INT64_MAX / 1'000'000'000 / 4;
  const int64_t ns =
      TimespecNs(timespec{std::min<int64_t>(request.tv_sec, kMaxSeconds), request.tv_nsec});
  const int64_t now = GuestMonotonicNs(c.state.monotonic_offset_ns);
  int64_t deadline = now + ns;
  if (flags & TIMER_ABSTIME) {
    deadline = IsOffsetClock(clock) ? ns : now + (ns - HostClockNs(clock));
  }
  if (deadline <= now) return SyscallResult::Return(0);
  c.state.threads.block = ThreadBlock{.wait = ThreadWait::kSleep,
                                      .deadline_ns = deadline,
                                      .expiry_result = 0,
                                      .remain_addr = (flags & TIMER_ABSTIME) ? 0 : remain_addr};
  return SyscallResult::Block();
}

// Sleeps on the host. A signal to the vCPU thread (--timeout, Ctrl-C) interrupts the sleep;
// the guest then sees EINTR and the remaining time, as on Linux.
SyscallResult Sleep(SyscallContext& c, clockid_t clock, int flags, uint64_t request_addr,
                    uint64_t remain_addr) {
  auto request = c.memory.ReadObject<timespec>(request_addr);
  if (!request) return ErrnoFrom(request.error());
  if (request->tv_sec < 0 || request->tv_nsec < 0 || request->tv_nsec >= 1'000'000'000) {
    return SyscallResult::Errno(EINVAL);
  }
  if (!c.state.threads.others.empty())
    return SleepAmongThreads(c, clock, flags, *request, remain_addr);
  // An absolute deadline on a monotonic-domain clock is guest time: the host sleeps until the
  // host time it corresponds to. A relative sleep becomes a deadline too (on the host's
  // CLOCK_MONOTONIC for CLOCK_REALTIME and CLOCK_TAI, whose relative sleeps ignore clock
  // changes): a control
  // request interrupting it must neither cut it short nor, served meanwhile, lengthen it (a
  // client asking without pause would otherwise keep the guest asleep for ever).
  const bool absolute = (flags & TIMER_ABSTIME) != 0;
  const clockid_t host_clock =
      !absolute && (clock == CLOCK_REALTIME || clock == CLOCK_TAI) ? CLOCK_MONOTONIC : clock;
  constexpr int64_t kMaxSeconds = INT64_MAX / 1'000'000'000 / 4;
  const int64_t deadline_ns =
      absolute ? 0
               : HostClockNs(host_clock) +
                     TimespecNs(timespec{std::min<int64_t>(request->tv_sec, kMaxSeconds),
                                         request->tv_nsec});
  const timespec next = absolute ? HostDeadline(clock, *request, c.state.monotonic_offset_ns)
                                 : NsTimespec(deadline_ns);
  int err;
  while ((err = clock_nanosleep(host_clock, TIMER_ABSTIME, &next, nullptr)) == EINTR &&
         c.KeepWaiting()) {
  }
  if (err == EINTR && remain_addr != 0 && !absolute) {
    const int64_t left = deadline_ns - HostClockNs(host_clock);
    const timespec remain = NsTimespec(left > 0 ? left : 0);
    if (auto r = c.memory.WriteObject(remain_addr, remain); !r) return ErrnoFrom(r.error());
  }
  return err == 0 ? SyscallResult::Return(0) : SyscallResult::Errno(err);
}

SyscallResult SysNanosleep(SyscallContext& c, const SyscallArgs& a) {
  return Sleep(c, CLOCK_MONOTONIC, 0, a.arg[0], a.arg[1]);
}

SyscallResult SysClockNanosleep(SyscallContext& c, const SyscallArgs& a) {
  const uint64_t clock = a.arg[0];
  if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC && clock != CLOCK_BOOTTIME &&
      clock != CLOCK_TAI) {
    return SyscallResult::Errno(clock == CLOCK_THREAD_CPUTIME_ID ? EINVAL : ENOTSUP);
  }
  const int flags = static_cast<int>(a.arg[1]);
  if (flags & ~TIMER_ABSTIME) return SyscallResult::Errno(EINVAL);
  return Sleep(c, static_cast<clockid_t>(clock), flags, a.arg[2], a.arg[3]);
}

}  // namespace

void RegisterTimeSyscalls(SyscallTable& table) {
  table.Register(SYS_clock_gettime, SysClockGettime);
  table.Register(SYS_clock_getres, SysClockGetres);
  table.Register(SYS_gettimeofday, SysGettimeofday);
  table.Register(SYS_time, SysTime);
  table.Register(SYS_nanosleep, SysNanosleep);
  table.Register(SYS_clock_nanosleep, SysClockNanosleep);
}

}  // namespace flurry
