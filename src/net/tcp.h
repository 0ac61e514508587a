// TCP sockets for flurry's peer protocols: listen, connect with a deadline, and whole-buffer
// reads/writes that give up after a timeout (a peer never blocks us forever).
#pragma once

#include <chrono>
#include <cstddef>

#include "base/error.h"
#include "base/unique_fd.h"
#include "net/page_protocol.h"

namespace flurry {

// Listens on `address` (port 0: the kernel picks one); `bound` gets the actual address.
Result<UniqueFd> ListenTcp(const HostPort& address, HostPort* bound);
// Connects within `timeout`; the socket is configured as ConfigureTcp says.
Result<UniqueFd> ConnectTcp(const HostPort& address, std::chrono::milliseconds timeout);
// Sets TCP_NODELAY, SO_RCVTIMEO/SO_SNDTIMEO and keepalive (a vanished peer fails the connection
// after about 8 s of silence) on a socket.
Result<void> ConfigureTcp(int fd, std::chrono::milliseconds timeout);

// Reads exactly n bytes. EOF before any byte: error code 0 with message "closed"; a timeout:
// ETIMEDOUT.
Result<void> ReadFull(int fd, void* data, size_t n);
Result<void> WriteFull(int fd, const void* data, size_t n);

}  // namespace flurry
