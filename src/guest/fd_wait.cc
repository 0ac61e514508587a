#include "guest/fd_wait.h"

#include <algorithm>
#include <csignal>
#include <ctime>

#include "guest/guest_time.h"

namespace flurry::fd_wait {
namespace {

constexpr uint64_t kSigsetSize = 8;
constexpr int64_t kNsPerMs = 1'000'000;
constexpr int64_t kNsPerSecond = 1'000'000'000;

}  // namespace

int64_t DeadlineAfter(const SyscallContext& c, int64_t ns) {
  if (ns <= 0) return kNow;
  constexpr int64_t kMaxNs = INT64_MAX / 4;
  return GuestMonotonicNs(c.state.monotonic_offset_ns) + std::min(ns, kMaxNs);
}

int64_t MillisecondsDeadline(const SyscallContext& c, int32_t timeout_ms) {
  return timeout_ms < 0 ? kForever : DeadlineAfter(c, timeout_ms * kNsPerMs);
}

Result<int64_t> TimespecDeadline(const SyscallContext& c, uint64_t addr) {
  if (addr == 0) return kForever;
  const timespec timeout = FLURRY_TRY(c.memory.ReadObject<timespec>(addr));
  if (!ValidTimespec(timeout)) {
    return FailErrno(EINVAL, "timeout");
  }
  constexpr int64_t kMaxSeconds = INT64_MAX / kNsPerSecond / 4;
  return DeadlineAfter(
      c, TimespecNs({std::min<int64_t>(timeout.tv_sec, kMaxSeconds), timeout.tv_nsec}));
}

Result<std::optional<uint64_t>> WaitMaskArg(const SyscallContext& c, uint64_t addr, uint64_t size) {
  if (addr == 0) return std::nullopt;
  if (size != kSigsetSize) return FailErrno(EINVAL, "sigset size");
  const uint64_t set = FLURRY_TRY(c.memory.ReadObject<uint64_t>(addr));
  return set & ~(SignalState::Bit(SIGKILL) | SignalState::Bit(SIGSTOP));
}

SyscallResult Park(SyscallContext& c, std::vector<pollfd> host, int64_t deadline,
                   std::optional<uint64_t> mask, bool restart_at_deadline) {
  ThreadBlock block{.wait = ThreadWait::kFd,
                    .deadline_ns = deadline == kForever ? 0 : deadline,
                    .expiry_result = 0};
  block.restart_at_deadline = restart_at_deadline;
  if (mask) {
    block.suspend = true;
    block.suspend_mask = *mask;
  }
  block.poll_fds = std::move(host);
  c.state.threads.block = std::move(block);
  return SyscallResult::Block();
}

}  // namespace flurry::fd_wait
