// poll and ppoll over the guest's fds. One look at their host fds (a host
// poll that does not wait) answers at once when something is ready or the timeout is zero;
// otherwise the thread parks on all of them (ThreadWait::kFd) with the timeout as its deadline,
// and the syscall is made again when one is ready (then it answers) or returns 0 at the
// deadline (the revents written before it parked are all zero). ppoll's signal mask stands for the
// wait as rt_sigsuspend's does (ThreadBlock::suspend). A signal ends the wait with EINTR; Linux
// never restarts these calls.
//
// Simplifications: a wait made again after a spurious wake starts its timeout over, and the
// time left is not written back (Linux updates ppoll's timespec). select and pselect6 are not
// offered yet: their fd sets are both input and output, so a wait that ends at its deadline
// would need the VMM to clear them.
#include <poll.h>
#include <sys/syscall.h>

#include <algorithm>
#include <csignal>
#include <ctime>
#include <optional>
#include <vector>

#include "guest/guest_time.h"
#include "guest/syscall.h"

namespace flurry {
namespace {

constexpr uint64_t kSigsetSize = 8;
constexpr int64_t kNsPerMs = 1'000'000;

// When the wait ends: now (a zero timeout), never (kForever), or at a guest CLOCK_MONOTONIC
// instant.
constexpr int64_t kForever = -1;
constexpr int64_t kNow = 0;

// A relative timeout as a deadline on the guest's CLOCK_MONOTONIC (saturated: centuries wait
// "forever" rather than overflow).
int64_t DeadlineAfter(const SyscallContext& c, int64_t ns) {
  if (ns <= 0) return kNow;
  constexpr int64_t kMaxNs = INT64_MAX / 4;
  return GuestMonotonicNs(c.state.monotonic_offset_ns) + std::min(ns, kMaxNs);
}

// A guest timespec timeout (0: none, wait forever), or -errno.
int64_t TimespecDeadline(const SyscallContext& c, uint64_t addr) {
  if (addr == 0) return kForever;
  auto timeout = c.memory.ReadObject<timespec>(addr);
  if (!timeout) return -static_cast<int64_t>(timeout.error().code_or(EFAULT));
  if (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1'000'000'000) {
    return -EINVAL;
  }
  constexpr int64_t kMaxSeconds = INT64_MAX / 1'000'000'000 / 4;
  return DeadlineAfter(
      c, TimespecNs({std::min<int64_t>(timeout->tv_sec, kMaxSeconds), timeout->tv_nsec}));
}

// ppoll's signal mask (nullopt: none given), or -errno.
std::optional<int64_t> ReadWaitMask(const SyscallContext& c, uint64_t addr, uint64_t size,
                                    uint64_t* mask) {
  if (addr == 0) return std::nullopt;
  if (size != kSigsetSize) return -EINVAL;
  auto set = c.memory.ReadObject<uint64_t>(addr);
  if (!set) return -static_cast<int64_t>(set.error().code_or(EFAULT));
  *mask = *set & ~(SignalState::Bit(SIGKILL) | SignalState::Bit(SIGSTOP));
  return 0;
}

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
    host.push_back(pollfd{.fd = (*file)->host_fd(), .events = entry.events, .revents = 0});
    index.push_back(i);
  }
  if (!host.empty() && poll(host.data(), host.size(), 0) < 0) return FailErrno("poll");
  for (size_t k = 0; k < host.size(); ++k) guest[index[k]].revents = host[k].revents;
  return static_cast<int>(
      std::count_if(guest.begin(), guest.end(), [](const pollfd& p) { return p.revents != 0; }));
}

// Parks the caller on `host` until `deadline` (expiring with 0), under `mask` if given.
SyscallResult Park(SyscallContext& c, std::vector<pollfd> host, int64_t deadline,
                   std::optional<uint64_t> mask) {
  ThreadBlock block{.wait = ThreadWait::kFd,
                    .deadline_ns = deadline == kForever ? 0 : deadline,
                    .expiry_result = 0};
  if (mask) {
    block.suspend = true;
    block.suspend_mask = *mask;
  }
  block.poll_fds = std::move(host);
  c.state.threads.block = std::move(block);
  return SyscallResult::Block();
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
  const auto timeout_ms = static_cast<int32_t>(a.arg[2]);
  const int64_t deadline = timeout_ms < 0 ? kForever : DeadlineAfter(c, timeout_ms * kNsPerMs);
  return PollFds(c, a.arg[0], a.arg[1], deadline, std::nullopt);
}

SyscallResult SysPpoll(SyscallContext& c, const SyscallArgs& a) {
  const int64_t deadline = TimespecDeadline(c, a.arg[2]);
  if (deadline < kForever) return SyscallResult::Return(deadline);
  uint64_t mask = 0;
  const std::optional<int64_t> has_mask = ReadWaitMask(c, a.arg[3], a.arg[4], &mask);
  if (has_mask && *has_mask < 0) return SyscallResult::Return(*has_mask);
  return PollFds(c, a.arg[0], a.arg[1], deadline,
                 has_mask ? std::optional<uint64_t>(mask) : std::nullopt);
}

}  // namespace

void RegisterPollSyscalls(SyscallTable& table) {
  table.Register(SYS_poll, SysPoll);
  table.Register(SYS_ppoll, SysPpoll);
}

}  // namespace flurry
