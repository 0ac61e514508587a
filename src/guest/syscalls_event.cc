// eventfd, eventfd2, timerfd_create/settime/gettime and signalfd, signalfd4: host eventfds and
// timerfds in the VMM, guest fds of kind kEventfd, kTimerfd and kSignalfd (a host eventfd the
// VMM keeps readable while a signal of its mask is pending: guest/signalfd.h). As a pipe's, their
// host fds are always non-blocking: a guest read of a zero eventfd or an unexpired timerfd (or a
// write that would overflow an eventfd) without O_NONBLOCK parks the thread until the host fd is
// ready (syscalls_file.cc, ThreadWait::kFd), and poll/select/epoll see them as the host does.
//
// The guest's monotonic clocks are the host's plus an offset (guest_time.h): an absolute
// timerfd deadline on CLOCK_MONOTONIC or CLOCK_BOOTTIME is converted to the host's clock, a
// relative one and CLOCK_REALTIME are passed as they are; what timerfd_gettime and read
// report is relative, the same on both. See docs/design.md ("Pipes and waiting for fds").
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>

#include <csignal>

#include "guest/guest_time.h"
#include "guest/signalfd.h"
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

// signalfd4(fd, mask, sizemask, flags), checked in Linux's order: size, the mask (EFAULT),
// flags, then fd: -1 makes a new signalfd, another fd must be one (EBADF, EINVAL) and gets
// the new mask (its flags stay). SIGKILL and SIGSTOP are never read.
Value MakeSignalfd(SyscallContext& context, const SyscallArgs& args, int flags) {
  constexpr int kSignalfdFlags = SFD_CLOEXEC | SFD_NONBLOCK;
  constexpr uint64_t kSigsetSize = 8;
  if (args.arg[2] != kSigsetSize) return FailErrno(EINVAL, "signalfd sigset size");
  const uint64_t mask = FLURRY_TRY(context.memory.ReadObject<uint64_t>(args.arg[1])) &
                        ~(SignalState::Bit(SIGKILL) | SignalState::Bit(SIGSTOP));
  if ((flags & ~kSignalfdFlags) != 0) return FailErrno(EINVAL, "signalfd4 flags");
  const int fd = IntArg(args.arg[0]);
  if (fd != -1) {
    OpenFile* file = FLURRY_TRY(context.state.fds.Get(fd));
    if (file->kind != FileKind::kSignalfd) return FailErrno(EINVAL, "not a signalfd");
    file->event.signal_mask = mask;
    SyncSignalfds(context.state);
    return fd;
  }
  UniqueFd host(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!host.valid()) return HostError("eventfd for a signalfd");
  OpenFile file = EventFile(FileKind::kSignalfd, std::move(host), flags & SFD_NONBLOCK);
  file.event.signal_mask = mask;
  const int installed =
      FLURRY_TRY(context.state.fds.Install(std::move(file), (flags & SFD_CLOEXEC) != 0));
  SyncSignalfds(context.state);
  return installed;
}

Value Signalfd(SyscallContext& context, const SyscallArgs& args) {
  return MakeSignalfd(context, args, 0);
}

Value Signalfd4(SyscallContext& context, const SyscallArgs& args) {
  return MakeSignalfd(context, args, IntArg(args.arg[3]));
}

}  // namespace

void RegisterEventSyscalls(SyscallTable& table) {
  table.Register(SYS_eventfd, Handle<Eventfd>);
  table.Register(SYS_eventfd2, Handle<Eventfd2>);
  table.Register(SYS_timerfd_create, Handle<TimerfdCreate>);
  table.Register(SYS_timerfd_settime, Handle<TimerfdSettime>);
  table.Register(SYS_timerfd_gettime, Handle<TimerfdGettime>);
  table.Register(SYS_signalfd, Handle<Signalfd>);
  table.Register(SYS_signalfd4, Handle<Signalfd4>);
}

}  // namespace file_syscalls
}  // namespace flurry
