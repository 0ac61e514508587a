// poll, ppoll, select and pselect6 over the guest's fds. One look at their host fds (a host
// poll that does not wait) answers at once when something is ready or the timeout is zero;
// otherwise the thread parks on all of them (ThreadWait::kFd) with the timeout as its deadline,
// and the syscall is made again when one is ready (then it answers) or returns 0 at the
// deadline (poll: the revents written before it parked are all zero; select: the deadline
// makes the call again, its timeout zeroed in guest memory at the park, so it answers with
// empty sets). ppoll's and pselect6's signal mask stands for the
// wait as rt_sigsuspend's does (ThreadBlock::suspend). A signal ends the wait with EINTR; Linux
// never restarts these calls.
//
// Simplifications: a poll made again after a spurious wake starts its timeout over, a select
// then answers at once (its timeout was zeroed: an early "timed out"); the time left is not
// written back otherwise (Linux writes it into select's timeval and ppoll's timespec).
#include <poll.h>
#include <sys/select.h>
#include <sys/syscall.h>

#include <algorithm>
#include <array>
#include <csignal>
#include <ctime>
#include <optional>
#include <vector>

#include "guest/fd_wait.h"
#include "guest/syscall.h"

namespace flurry {
namespace {

using fd_wait::kForever;
using fd_wait::kNow;
using fd_wait::Park;

// The guest's pollfds as host pollfds: `host` gets the open ones' host fds (their index in
// `index`); a closed fd is POLLNVAL at once, a negative one is skipped. Then one host poll that
// does not wait fills the revents. Returns how many entries have any.
Result<int> LookOnce(const SyscallContext& c, std::vector<pollfd>& guest,
                     std::vector<pollfd>& host) {
  std::vector<size_t> index;
  for (size_t i = 0; i < guest.size(); ++i) {
    pollfd& entry = guest[i];
    entry.revents = 0;
    if (entry.fd < 0) continue;
    auto file = c.state.fds.Get(entry.fd);
    if (!file) {
      entry.revents = POLLNVAL;
      continue;
    }
    // A signalfd's host eventfd is always writable; Linux's signalfd is never.
    const short events =
        (*file)->kind == FileKind::kSignalfd
            ? static_cast<short>(entry.events & ~(POLLOUT | POLLWRNORM | POLLWRBAND))
            : entry.events;
    host.push_back(pollfd{.fd = (*file)->host_fd(), .events = events, .revents = 0});
    index.push_back(i);
  }
  if (!host.empty() && poll(host.data(), host.size(), 0) < 0) return FailErrno("poll");
  for (size_t k = 0; k < host.size(); ++k) guest[index[k]].revents = host[k].revents;
  return static_cast<int>(
      std::count_if(guest.begin(), guest.end(), [](const pollfd& p) { return p.revents != 0; }));
}

SyscallResult PollFds(SyscallContext& c, uint64_t addr, uint64_t nfds, int64_t deadline,
                      std::optional<uint64_t> mask) {
  if (nfds > static_cast<uint64_t>(FdTable::kMaxFds)) return SyscallResult::Errno(EINVAL);
  std::vector<pollfd> guest(nfds);
  if (auto r = c.memory.Read(addr, guest.data(), nfds * sizeof(pollfd)); !r) {
    return ErrnoFrom(r.error());
  }
  std::vector<pollfd> host;
  auto ready = LookOnce(c, guest, host);
  if (!ready) return ErrnoFrom(ready.error());
  if (auto w = c.memory.Write(addr, guest.data(), nfds * sizeof(pollfd)); !w) {
    return ErrnoFrom(w.error());
  }
  if (*ready > 0 || deadline == kNow) return SyscallResult::Return(*ready);
  return Park(c, std::move(host), deadline, mask);
}

SyscallResult SysPoll(SyscallContext& c, const SyscallArgs& a) {
  const int64_t deadline = fd_wait::MillisecondsDeadline(c, static_cast<int32_t>(a.arg[2]));
  return PollFds(c, a.arg[0], a.arg[1], deadline, std::nullopt);
}

SyscallResult SysPpoll(SyscallContext& c, const SyscallArgs& a) {
  const auto deadline = fd_wait::TimespecDeadline(c, a.arg[2]);
  if (!deadline) return ErrnoFrom(deadline.error());
  const auto mask = fd_wait::WaitMaskArg(c, a.arg[3], a.arg[4]);
  if (!mask) return ErrnoFrom(mask.error());
  return PollFds(c, a.arg[0], a.arg[1], *deadline, *mask);
}

// ---- select -----------------------------------------------------------------------------------

// Linux's POLLIN_SET, POLLOUT_SET, POLLEX_SET: which revents make an fd ready for each set.
constexpr short kReadReady = POLLIN | POLLRDNORM | POLLRDBAND | POLLHUP | POLLERR;
constexpr short kWriteReady = POLLOUT | POLLWRNORM | POLLWRBAND | POLLERR;
constexpr short kExceptReady = POLLPRI;

using FdSet = std::array<uint64_t, FdTable::kMaxFds / 64>;
bool IsSet(const FdSet& set, int fd) {
  return (set[static_cast<size_t>(fd) / 64] >> (fd % 64)) & 1;
}
void Set(FdSet& set, int fd) { set[static_cast<size_t>(fd) / 64] |= uint64_t{1} << (fd % 64); }

// select/pselect6(nfds, readfds, writefds, exceptfds, timeout, ...): `deadline` from the
// timeout at `timeout_addr` (a timeval or timespec, 16 bytes; 0: none), `mask` pselect6's.
SyscallResult SelectFds(SyscallContext& c, const SyscallArgs& a, int64_t deadline,
                        uint64_t timeout_addr, std::optional<uint64_t> mask) {
  const auto nfds = static_cast<int32_t>(a.arg[0]);
  if (nfds < 0) return SyscallResult::Errno(EINVAL);
  const int count = std::min(nfds, FdTable::kMaxFds);  // Linux cuts nfds to its fd table's
  const size_t bytes = (static_cast<size_t>(count) + 63) / 64 * 8;
  FdSet in[3] = {};  // read, write, except
  for (int s = 0; s < 3; ++s) {
    if (a.arg[1 + s] == 0) continue;
    if (auto r = c.memory.Read(a.arg[1 + s], in[s].data(), bytes); !r) return ErrnoFrom(r.error());
  }
  // Each fd in a set, as a pollfd asking for what its sets ask.
  static constexpr short kAsked[3] = {POLLIN, POLLOUT, POLLPRI};
  static constexpr short kCounts[3] = {kReadReady, kWriteReady, kExceptReady};
  std::vector<pollfd> guest;
  for (int fd = 0; fd < count; ++fd) {
    short events = 0;
    for (int s = 0; s < 3; ++s) {
      if (IsSet(in[s], fd)) events |= kAsked[s];
    }
    if (events == 0) continue;
    if (!c.state.fds.IsOpen(fd)) return SyscallResult::Errno(EBADF);
    guest.push_back(pollfd{.fd = fd, .events = events, .revents = 0});
  }
  std::vector<pollfd> host;
  if (auto looked = LookOnce(c, guest, host); !looked) return ErrnoFrom(looked.error());
  FdSet out[3] = {};
  int ready = 0;
  for (const pollfd& p : guest) {
    for (int s = 0; s < 3; ++s) {
      if ((p.events & kAsked[s]) != 0 && (p.revents & kCounts[s]) != 0) {
        Set(out[s], p.fd);
        ++ready;  // Linux counts an fd once per set it is ready in
      }
    }
  }
  if (ready == 0 && deadline != kNow) {
    if (deadline == kForever) return Park(c, std::move(host), deadline, mask);
    // The sets are input and output both: what ends the wait is the call made again, which
    // answers at once (the timeout it reads is zero now, as Linux leaves it when time is up).
    const std::array<uint64_t, 2> zero{};
    if (auto w = c.memory.Write(timeout_addr, zero.data(), sizeof zero); !w) {
      return ErrnoFrom(w.error());
    }
    return Park(c, std::move(host), deadline, mask, /*restart_at_deadline=*/true);
  }
  for (int s = 0; s < 3; ++s) {
    if (a.arg[1 + s] == 0) continue;
    if (auto w = c.memory.Write(a.arg[1 + s], out[s].data(), bytes); !w)
      return ErrnoFrom(w.error());
  }
  return SyscallResult::Return(ready);
}

SyscallResult SysSelect(SyscallContext& c, const SyscallArgs& a) {
  int64_t deadline = kForever;
  if (a.arg[4] != 0) {
    auto tv = c.memory.ReadObject<timeval>(a.arg[4]);
    if (!tv) return ErrnoFrom(tv.error());
    if (tv->tv_sec < 0 || tv->tv_usec < 0) return SyscallResult::Errno(EINVAL);
    // Microseconds past a second count as they come (Linux normalises them).
    constexpr int64_t kMaxSeconds = INT64_MAX / 1'000'000'000 / 4;
    deadline =
        fd_wait::DeadlineAfter(c, std::min<int64_t>(tv->tv_sec, kMaxSeconds) * 1'000'000'000 +
                                      std::min<int64_t>(tv->tv_usec, 1'000'000'000) * 1000);
  }
  return SelectFds(c, a, deadline, a.arg[4], std::nullopt);
}

SyscallResult SysPselect6(SyscallContext& c, const SyscallArgs& a) {
  const auto deadline = fd_wait::TimespecDeadline(c, a.arg[4]);
  if (!deadline) return ErrnoFrom(deadline.error());
  std::optional<uint64_t> mask;
  if (a.arg[5] != 0) {  // { const sigset_t* ss; size_t ss_len; }
    std::array<uint64_t, 2> arg{};
    if (auto r = c.memory.Read(a.arg[5], arg.data(), sizeof arg); !r) return ErrnoFrom(r.error());
    auto given = fd_wait::WaitMaskArg(c, arg[0], arg[1]);
    if (!given) return ErrnoFrom(given.error());
    mask = *given;
  }
  return SelectFds(c, a, *deadline, a.arg[4], mask);
}

}  // namespace

void RegisterPollSyscalls(SyscallTable& table) {
  table.Register(SYS_poll, SysPoll);
  table.Register(SYS_ppoll, SysPpoll);
  table.Register(SYS_select, SysSelect);
  table.Register(SYS_pselect6, SysPselect6);
}

}  // namespace flurry
