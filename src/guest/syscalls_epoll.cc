// epoll_create, epoll_create1, epoll_ctl, epoll_wait, epoll_pwait and epoll_pwait2: each guest
// epoll instance is a host epoll instance in the VMM (kind kEpoll). epoll_ctl registers the
// host fd behind the guest's with the guest's events and data, so the host's epoll decides
// readiness, level and edge triggering, EPOLLONESHOT and EPOLLEXCLUSIVE as Linux does, and
// epoll_wait copies the host's answer (whose data is the guest's) into guest memory. A wait
// that finds nothing ready parks the thread on the instance's host fd, which is readable while
// something is ready (ThreadWait::kFd); the call is then made again. A signal ends the wait
// with EINTR (never restarted, as Linux).
//
// The interest list is kept as plain data too (OpenFile::event.interests) for VM descriptors.
// Not as Linux: a registration is keyed by the host's open file (and its host fd), not by the
// guest fd, so two guest fds sharing one open file (dup) are one registration (adding the
// second: EEXIST); EPOLLWAKEUP is dropped (the guest has no CAP_BLOCK_SUSPEND: Linux drops it
// too). See docs/design.md ("Pipes and waiting for fds").
#include <sys/epoll.h>

#include <climits>

#include "guest/fd_wait.h"
#include "guest/syscalls_file_support.h"

namespace flurry {
namespace file_syscalls {
namespace {

static_assert(sizeof(epoll_event) == 12, "x86-64 struct epoll_event is packed");

// Linux refuses more than INT_MAX / sizeof(struct epoll_event) events per wait; flurry asks
// the host for at most kEventsPerWait at a time (fewer than asked is always a valid answer).
constexpr int64_t kMaxEventsArg = INT_MAX / static_cast<int64_t>(sizeof(epoll_event));
constexpr int kEventsPerWait = 1024;

Value MakeEpoll(SyscallContext& context, int flags) {
  if ((flags & ~EPOLL_CLOEXEC) != 0) return FailErrno(EINVAL, "epoll_create1 flags");
  UniqueFd host(epoll_create1(EPOLL_CLOEXEC));
  if (!host.valid()) return HostError("epoll_create1");
  return FLURRY_TRY(context.state.fds.Install(EventFile(FileKind::kEpoll, std::move(host), 0),
                                              (flags & EPOLL_CLOEXEC) != 0));
}

Value EpollCreate(SyscallContext& context, const SyscallArgs& args) {
  if (IntArg(args.arg[0]) <= 0) return FailErrno(EINVAL, "epoll_create size");
  return MakeEpoll(context, 0);
}

Value EpollCreate1(SyscallContext& context, const SyscallArgs& args) {
  return MakeEpoll(context, IntArg(args.arg[0]));
}

// The epoll instance behind a guest fd: EBADF if none is open, EINVAL if it is not one.
Result<OpenFile*> EpollArg(const FdTable& fds, int fd) {
  OpenFile* file = FLURRY_TRY(fds.Get(fd));
  if (file->kind != FileKind::kEpoll) return FailErrno(EINVAL, "not an epoll fd");
  return file;
}

// Keeps `epoll`'s interest list as the host's now is, after a successful epoll_ctl.
void Record(OpenFile& epoll, int op, int fd, const std::shared_ptr<OpenFile>& target,
            const epoll_event& event) {
  std::vector<EpollInterest>& list = epoll.event.interests;
  std::erase_if(list, [](const EpollInterest& i) { return i.file.expired(); });
  auto same = [&target](const EpollInterest& i) { return i.file.lock() == target; };
  if (op == EPOLL_CTL_DEL) {
    std::erase_if(list, same);
  } else if (op == EPOLL_CTL_ADD) {
    list.push_back({.fd = fd, .events = event.events, .data = event.data.u64, .file = target});
  } else if (auto it = std::find_if(list.begin(), list.end(), same); it != list.end()) {
    it->events = event.events;
    it->data = event.data.u64;
  }
}

// epoll_ctl(epfd, op, fd, event), checked in Linux's order: the event (EFAULT), the fds
// (EBADF), then the host's verdict on their host fds, which are of the same kinds (EPERM for
// a file that cannot be polled, EINVAL for an fd that is not an epoll instance, is the
// instance itself, or an unknown op, EEXIST, ENOENT, ELOOP).
Value EpollCtl(SyscallContext& context, const SyscallArgs& args) {
  const int op = IntArg(args.arg[1]);
  const int fd = IntArg(args.arg[2]);
  epoll_event event{};
  if (op != EPOLL_CTL_DEL) event = FLURRY_TRY(context.memory.ReadObject<epoll_event>(args.arg[3]));
  FdTable& fds = context.state.fds;
  OpenFile* epoll = FLURRY_TRY(fds.Get(IntArg(args.arg[0])));
  OpenFile* target = FLURRY_TRY(fds.Get(fd));
  event.events &= ~static_cast<uint32_t>(EPOLLWAKEUP);
  if (epoll->kind != FileKind::kEpoll) {
    // Not an instance (whatever its host fd is): EPERM first if the target cannot be polled,
    // as a scratch instance tells, then EINVAL.
    UniqueFd scratch(epoll_create1(EPOLL_CLOEXEC));
    epoll_event probe{.events = EPOLLIN, .data = {.u64 = 0}};
    if (scratch.valid() &&
        epoll_ctl(scratch.get(), EPOLL_CTL_ADD, target->host_fd(), &probe) != 0 && errno == EPERM) {
      return FailErrno(EPERM, "epoll_ctl");
    }
    return FailErrno(EINVAL, "not an epoll fd");
  }
  if (target->kind == FileKind::kSignalfd) {  // its host eventfd is always writable, it never
    event.events &= ~static_cast<uint32_t>(EPOLLOUT | EPOLLWRNORM | EPOLLWRBAND);
  }
  if (epoll_ctl(epoll->host_fd(), op, target->host_fd(), &event) != 0) {
    return HostError("epoll_ctl");
  }
  Record(*epoll, op, fd, fds.entries()[static_cast<size_t>(fd)].file, event);
  return 0;
}

// What the epoll_wait calls share once their timeout is a deadline and their mask is read.
SyscallResult WaitForEvents(SyscallContext& context, const SyscallArgs& args, int64_t deadline,
                            std::optional<uint64_t> mask) {
  const int maxevents = IntArg(args.arg[2]);
  if (maxevents <= 0 || maxevents > kMaxEventsArg) return SyscallResult::Errno(EINVAL);
  const int wanted = std::min(maxevents, kEventsPerWait);
  const uint64_t bytes = static_cast<uint64_t>(wanted) * sizeof(epoll_event);
  // Nothing is taken from the host before the guest can be given it.
  if (auto writable = context.memory.CheckAccess(args.arg[1], bytes, GuestAccess::kWrite);
      !writable) {
    return ErrnoFrom(writable.error());
  }
  auto epoll = EpollArg(context.state.fds, IntArg(args.arg[0]));
  if (!epoll) return ErrnoFrom(epoll.error());
  std::vector<epoll_event> ready(static_cast<size_t>(wanted));
  const int n = epoll_wait((*epoll)->host_fd(), ready.data(), wanted, 0);
  if (n < 0) return SyscallResult::Errno(errno == EINTR ? EAGAIN : errno);
  if (n > 0) {
    const uint64_t filled = static_cast<uint64_t>(n) * sizeof(epoll_event);
    if (auto w = context.memory.Write(args.arg[1], ready.data(), filled); !w) {
      return ErrnoFrom(w.error());
    }
    return SyscallResult::Return(n);
  }
  if (deadline == fd_wait::kNow) return SyscallResult::Return(0);
  std::vector<pollfd> host{pollfd{.fd = (*epoll)->host_fd(), .events = POLLIN, .revents = 0}};
  return fd_wait::Park(context, std::move(host), deadline, mask);
}

SyscallResult SysEpollWait(SyscallContext& context, const SyscallArgs& args) {
  const int64_t deadline =
      fd_wait::MillisecondsDeadline(context, static_cast<int32_t>(args.arg[3]));
  return WaitForEvents(context, args, deadline, std::nullopt);
}

SyscallResult SysEpollPwait(SyscallContext& context, const SyscallArgs& args) {
  const auto mask = fd_wait::WaitMaskArg(context, args.arg[4], args.arg[5]);
  if (!mask) return ErrnoFrom(mask.error());
  const int64_t deadline =
      fd_wait::MillisecondsDeadline(context, static_cast<int32_t>(args.arg[3]));
  return WaitForEvents(context, args, deadline, *mask);
}

SyscallResult SysEpollPwait2(SyscallContext& context, const SyscallArgs& args) {
  const auto mask = fd_wait::WaitMaskArg(context, args.arg[4], args.arg[5]);
  if (!mask) return ErrnoFrom(mask.error());
  const auto deadline = fd_wait::TimespecDeadline(context, args.arg[3]);
  if (!deadline) return ErrnoFrom(deadline.error());
  return WaitForEvents(context, args, *deadline, *mask);
}

}  // namespace

void RegisterEpollSyscalls(SyscallTable& table) {
  table.Register(SYS_epoll_create, Handle<EpollCreate>);
  table.Register(SYS_epoll_create1, Handle<EpollCreate1>);
  table.Register(SYS_epoll_ctl, Handle<EpollCtl>);
  table.Register(SYS_epoll_wait, SysEpollWait);
  table.Register(SYS_epoll_pwait, SysEpollPwait);
  table.Register(SYS_epoll_pwait2, SysEpollPwait2);
}

}  // namespace file_syscalls
}  // namespace flurry
