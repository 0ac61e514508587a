// Messages with file descriptors attached (SCM_RIGHTS) on a Unix socket: one sendmsg or recvmsg
// each. Used where a process hands descriptors to another one it trusts as itself (its child,
// its parent); what the bytes mean is the caller's format.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace flurry {

// The most descriptors one message carries (the kernel's SCM_MAX_FD is 253).
inline constexpr size_t kMaxFdsPerMessage = 250;

// Sends `bytes` (not empty) with `fds` attached (at most kMaxFdsPerMessage) in one message.
// MSG_NOSIGNAL: a peer that is gone is EPIPE, not SIGPIPE. A short send is an error.
Result<void> SendWithFds(int socket, std::span<const uint8_t> bytes, std::span<const int> fds);

// Receives one message into `buffer` and appends its descriptors (close-on-exec) to *fds,
// which owns them even when the message is refused. Returns the message's length; 0 is EOF.
// A message longer than the buffer, or with more than kMaxFdsPerMessage descriptors, is an
// error (EMSGSIZE). EINTR is retried.
Result<size_t> ReceiveWithFds(int socket, std::span<uint8_t> buffer, std::vector<UniqueFd>* fds);

}  // namespace flurry
