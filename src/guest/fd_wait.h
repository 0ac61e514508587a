// What the calls that wait for fds share (poll, ppoll, select, pselect6 in syscalls_poll.cc;
// epoll_wait, epoll_pwait, epoll_pwait2 in syscalls_epoll.cc): their timeouts as deadlines on
// the guest's CLOCK_MONOTONIC, their signal-mask argument, and parking the calling thread on
// host fds (ThreadWait::kFd). Internal to the syscall layer; run on the vCPU thread.
#pragma once

#include <poll.h>

#include <cstdint>
#include <optional>
#include <vector>

#include "guest/syscall.h"

namespace flurry::fd_wait {

// When a wait ends: now (a zero timeout), never (kForever), or at a guest CLOCK_MONOTONIC
// instant (any other value).
inline constexpr int64_t kForever = -1;
inline constexpr int64_t kNow = 0;

// A relative timeout as a deadline (saturated: centuries wait "forever" rather than overflow).
int64_t DeadlineAfter(const SyscallContext& c, int64_t ns);
// A timeout in milliseconds, negative: none.
int64_t MillisecondsDeadline(const SyscallContext& c, int32_t timeout_ms);
// A guest timespec timeout at `addr` (0: none, kForever). EFAULT, EINVAL.
Result<int64_t> TimespecDeadline(const SyscallContext& c, uint64_t addr);

// A guest sigset_t argument of `size` bytes standing for the mask during the wait (nullopt
// when `addr` is 0); SIGKILL and SIGSTOP cannot be in it. EINVAL (size), EFAULT.
Result<std::optional<uint64_t>> WaitMaskArg(const SyscallContext& c, uint64_t addr, uint64_t size);

// Parks the caller on `host` until `deadline` (the call then returns 0, or with
// `restart_at_deadline` is made again) or until one is ready (the call is made again), under
// `mask` if given (as rt_sigsuspend's).
SyscallResult Park(SyscallContext& c, std::vector<pollfd> host, int64_t deadline,
                   std::optional<uint64_t> mask, bool restart_at_deadline = false);

}  // namespace flurry::fd_wait
