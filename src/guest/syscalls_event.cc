// eventfd, eventfd2 and timerfd_create/settime/gettime: host eventfds and timerfds in the VMM,
// guest fds of kind kEventfd and kTimerfd. As a pipe's, their host fds are always non-blocking:
// a guest read of a zero eventfd or an unexpired timerfd (or a write that would overflow an
// eventfd) without O_NONBLOCK parks the thread until the host fd is ready (syscalls_file.cc,
// ThreadWait::kFd), and poll/select/epoll see them as the host does.
//
// The guest's monotonic clocks are the host's plus an offset (guest_time.h): an absolute
// timerfd deadline on CLOCK_MONOTONIC or CLOCK_BOOTTIME is converted to the host's clock, a
// relative one and CLOCK_REALTIME are passed as they are; what timerfd_gettime and read
// report is relative, the same on both. See docs/design.md ("Pipes and waiting for fds").
#include <sys/eventfd.h>
#include <sys/timerfd.h>

#include "guest/guest_time.h"
#include "guest/syscalls_file_support.h"

namespace flurry {
namespace file_syscalls {
namespace {

constexpr int kEventfdFlags = EFD_CLOEXEC | EFD_NONBLOCK | EFD_SEMAPHORE;
constexpr int kTimerfdFlags = TFD_CLOEXEC | TFD_NONBLOCK;
constexpr int kTimerfdSetFlags = TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET;

// eventfd2(initval, flags).
Value MakeEventfd(SyscallContext& context, uint64_t initval, int flags) {
  if ((flags & ~kEventfdFlags) != 0) return FailErrno(EINVAL, "eventfd2 flags");
  UniqueFd host(eventfd(static_cast<unsigned>(initval),
                        EFD_CLOEXEC | EFD_NONBLOCK | (flags & EFD_SEMAPHORE)));
  if (!host.valid()) return HostError("eventfd");
  OpenFile file = EventFile(FileKind::kEventfd, std::move(host), flags);
  file.event.semaphore = (flags & EFD_SEMAPHORE) != 0;
  return FLURRY_TRY(context.state.fds.Install(std::move(file), (flags & EFD_CLOEXEC) != 0));
}

Value Eventfd(SyscallContext& context, const SyscallArgs& args) {
  return MakeEventfd(context, args.arg[0], 0);
}

Value Eventfd2(SyscallContext& context, const SyscallArgs& args) {
  return MakeEventfd(context, args.arg[0], IntArg(args.arg[1]));
}

Value TimerfdCreate(SyscallContext& context, const SyscallArgs& args) {
  const int clock = IntArg(args.arg[0]);
  const int flags = IntArg(args.arg[1]);
  if ((flags & ~kTimerfdFlags) != 0) return FailErrno(EINVAL, "timerfd_create flags");
  if (clock == CLOCK_REALTIME_ALARM || clock == CLOCK_BOOTTIME_ALARM) {
    return FailErrno(EPERM, "timerfd alarm clocks need CAP_WAKE_ALARM");
  }
  if (clock != CLOCK_REALTIME && clock != CLOCK_MONOTONIC && clock != CLOCK_BOOTTIME) {
    return FailErrno(EINVAL, "timerfd clock");
  }
  UniqueFd host(timerfd_create(clock, TFD_CLOEXEC | TFD_NONBLOCK));
  if (!host.valid()) return HostError("timerfd_create");
  OpenFile file = EventFile(FileKind::kTimerfd, std::move(host), flags);
  file.event.clock = clock;
  return FLURRY_TRY(context.state.fds.Install(std::move(file), (flags & TFD_CLOEXEC) != 0));
}

// The timerfd behind a guest fd: EBADF if none is open, EINVAL if it is not a timerfd.
Result<OpenFile*> TimerfdArg(SyscallContext& context, uint64_t fd) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(fd)));
  if (file->kind != FileKind::kTimerfd) return FailErrno(EINVAL, "not a timerfd");
  return file;
}

// Checked in Linux's order: the new value (EFAULT), the flags and times (EINVAL), the fd.
Value TimerfdSettime(SyscallContext& context, const SyscallArgs& args) {
  itimerspec setting = FLURRY_TRY(context.memory.ReadObject<itimerspec>(args.arg[2]));
  const int flags = IntArg(args.arg[1]);
  if ((flags & ~kTimerfdSetFlags) != 0) return FailErrno(EINVAL, "timerfd_settime flags");
  if (!ValidTimespec(setting.it_value) || !ValidTimespec(setting.it_interval)) {
    return FailErrno(EINVAL, "timerfd_settime time");
  }
  OpenFile* file = FLURRY_TRY(TimerfdArg(context, args.arg[0]));
  const bool armed = setting.it_value.tv_sec != 0 || setting.it_value.tv_nsec != 0;
  if (armed && (flags & TFD_TIMER_ABSTIME) != 0) {
    setting.it_value =
        HostDeadline(file->event.clock, setting.it_value, context.state.monotonic_offset_ns);
    // A guest deadline from before the host clock's zero has passed: due at once, not
    // disarmed.
    if (setting.it_value.tv_sec == 0 && setting.it_value.tv_nsec == 0) setting.it_value.tv_nsec = 1;
  }
  itimerspec old{};
  if (timerfd_settime(file->host_fd(), flags, &setting, &old) != 0) {
    return HostError("timerfd_settime");
  }
  if (args.arg[3] != 0) FLURRY_TRY(context.memory.WriteObject(args.arg[3], old));
  return 0;
}

Value TimerfdGettime(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(TimerfdArg(context, args.arg[0]));
  itimerspec now{};
  if (timerfd_gettime(file->host_fd(), &now) != 0) return HostError("timerfd_gettime");
  FLURRY_TRY(context.memory.WriteObject(args.arg[1], now));
  return 0;
}

}  // namespace

void RegisterEventSyscalls(SyscallTable& table) {
  table.Register(SYS_eventfd, Handle<Eventfd>);
  table.Register(SYS_eventfd2, Handle<Eventfd2>);
  table.Register(SYS_timerfd_create, Handle<TimerfdCreate>);
  table.Register(SYS_timerfd_settime, Handle<TimerfdSettime>);
  table.Register(SYS_timerfd_gettime, Handle<TimerfdGettime>);
}

}  // namespace file_syscalls
}  // namespace flurry
