#include "fork/vm_gathering.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/fd_passing.h"
#include "base/wait_readable.h"
#include "fmt/format.h"

namespace flurry {
namespace {

socklen_t AbstractAddress(const std::string& name, sockaddr_un* address) {
  *address = sockaddr_un{};
  address->sun_family = AF_UNIX;
  // Abstract: a leading NUL, no file; gone with the last socket bound to it.
  const size_t length = std::min(name.size(), sizeof address->sun_path - 1);
  std::memcpy(address->sun_path + 1, name.data(), length);
  return static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + length);
}

}  // namespace

std::string GatheringName(int32_t hub_host_pid, uint32_t number) {
  return fmt::format("flurry-gather-{}-{}", hub_host_pid, number);
}

std::string RendezvousName(int32_t owner_host_pid, int32_t clone_id) {
  return fmt::format("flurry-vmclone-{}-{}", owner_host_pid, clone_id);
}

Result<UniqueFd> ListenAt(const std::string& name) {
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return FailErrno("socket");
  sockaddr_un address;
  const socklen_t length = AbstractAddress(name, &address);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&address), length) != 0) {
    return FailErrno(fmt::format("binding @{}", name));
  }
  if (listen(fd.get(), 64) != 0) return FailErrno(fmt::format("listening at @{}", name));
  return fd;
}

Result<UniqueFd> ConnectTo(const std::string& name) {
  UniqueFd fd(socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return FailErrno("socket");
  sockaddr_un address;
  const socklen_t length = AbstractAddress(name, &address);
  int r;
  do {
    r = connect(fd.get(), reinterpret_cast<sockaddr*>(&address), length);
  } while (r != 0 && errno == EINTR);
  if (r != 0) return FailErrno(fmt::format("connecting to @{}", name));
  return fd;
}

Result<UniqueFd> AcceptWithin(int listener, std::chrono::milliseconds timeout) {
  FLURRY_TRY(WaitReadable(listener, std::chrono::steady_clock::now() + timeout,
                          "waiting for a connection"));
  UniqueFd fd(accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
  if (!fd.valid()) return FailErrno("accept");
  ucred peer{};
  socklen_t length = sizeof peer;
  if (getsockopt(fd.get(), SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    return FailErrno("SO_PEERCRED");
  }
  if (peer.uid != geteuid()) return FailErrno(EACCES, "a connection from another user");
  return fd;
}

Result<pid_t> PeerPid(int socket) {
  ucred peer{};
  socklen_t length = sizeof peer;
  if (getsockopt(socket, SOL_SOCKET, SO_PEERCRED, &peer, &length) != 0) {
    return FailErrno("SO_PEERCRED");
  }
  return peer.pid;
}

Result<void> SendGatherMessage(int socket, const GatherMessage& message,
                               const std::vector<int>& fds) {
  if (fds.size() > 2 * kMaxGatherPipes + 1) return Fail("{} fds in one message", fds.size());
  FLURRY_TRY_CTX(
      SendWithFds(socket, std::span(reinterpret_cast<const uint8_t*>(&message), sizeof message),
                  fds),
      "sending to another VMM");
  return {};
}

Result<GatherMessage> ReceiveGatherMessage(int socket, GatherMessage::Type expected,
                                           std::chrono::milliseconds timeout,
                                           std::vector<UniqueFd>* fds) {
  return ReceiveGatherMessageOf(socket, {expected}, timeout, fds);
}

Result<GatherMessage> ReceiveGatherMessageOf(int socket,
                                             std::initializer_list<GatherMessage::Type> expected,
                                             std::chrono::milliseconds timeout,
                                             std::vector<UniqueFd>* fds) {
  FLURRY_TRY(
      WaitReadable(socket, std::chrono::steady_clock::now() + timeout, "waiting for another VMM"));
  GatherMessage message;
  std::vector<UniqueFd> received;
  auto n = ReceiveWithFds(socket, std::span(reinterpret_cast<uint8_t*>(&message), sizeof message),
                          &received);
  if (!n && n.error().code() == EMSGSIZE) {
    return Fail("a malformed message from another VMM: {}", n.error().message());
  }
  if (!n) return std::unexpected(n.error().WithContext("reading from another VMM"));
  if (*n == 0) return FailErrno(EPIPE, "reading from another VMM: it has gone");
  if (*n != sizeof message) return Fail("a malformed message from another VMM ({} bytes)", *n);
  if (message.magic != kGatherMagic || message.version != kGatherVersion) {
    return Fail("a message from another VMM with magic {:#x}, version {}", message.magic,
                message.version);
  }
  if (std::find(expected.begin(), expected.end(), message.type) == expected.end()) {
    return Fail("another VMM sent message type {} instead of {}", message.type,
                static_cast<int>(*expected.begin()));
  }
  if (message.count > kMaxGatherPipes) {
    return Fail("another VMM named {} pipes, at most {} allowed", message.count, kMaxGatherPipes);
  }
  size_t want = 0;
  if (message.type == GatherMessage::kHello) want = message.count;
  if (message.type == GatherMessage::kSetup) want = 1 + 2 * message.count;
  if (message.type == GatherMessage::kWrite) want = 1;
  if (received.size() != want) {
    return Fail("another VMM sent {} fds with a message that carries {}", received.size(), want);
  }
  if (fds != nullptr) *fds = std::move(received);
  return message;
}

}  // namespace flurry
