#include "net/tcp.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

namespace flurry {
namespace {

Result<sockaddr_in> Resolve(const HostPort& address) {
  sockaddr_in sin{};
  sin.sin_family = AF_INET;
  sin.sin_port = htons(address.port);
  if (inet_pton(AF_INET, address.host.c_str(), &sin.sin_addr) == 1) return sin;
  addrinfo hints{};
  hints.ai_family = AF_INET;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* found = nullptr;
  const int rc = getaddrinfo(address.host.c_str(), nullptr, &hints, &found);
  if (rc != 0 || found == nullptr) {
    return Fail("resolving {}: {}", address.host, gai_strerror(rc));
  }
  sin.sin_addr = reinterpret_cast<sockaddr_in*>(found->ai_addr)->sin_addr;
  freeaddrinfo(found);
  return sin;
}

}  // namespace

Result<void> ConfigureTcp(int fd, std::chrono::milliseconds timeout) {
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) {
    return FailErrno("TCP_NODELAY");
  }
  timeval tv{};
  tv.tv_sec = static_cast<time_t>(timeout.count() / 1000);
  tv.tv_usec = static_cast<suseconds_t>((timeout.count() % 1000) * 1000);
  if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) != 0 ||
      setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) != 0) {
    return FailErrno("socket timeouts");
  }
  // A peer whose host vanished (powered off, its network namespace deleted) never closes the
  // connection: keepalive probes notice it after about 8 s of silence, and the connection then
  // fails instead of being waited on forever (a page server would outlive its VM).
  const int idle_s = 5, interval_s = 1, probes = 3;
  if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle_s, sizeof idle_s) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &interval_s, sizeof interval_s) != 0 ||
      setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &probes, sizeof probes) != 0) {
    return FailErrno("TCP keepalive");
  }
  return {};
}

Result<UniqueFd> ListenTcp(const HostPort& address, HostPort* bound) {
  sockaddr_in sin = FLURRY_TRY(Resolve(address));
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return FailErrno("socket");
  int one = 1;
  setsockopt(fd.get(), SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    return FailErrno(fmt::format("binding {}", address.ToString()));
  }
  if (listen(fd.get(), 128) != 0) return FailErrno("listen");
  socklen_t len = sizeof sin;
  if (getsockname(fd.get(), reinterpret_cast<sockaddr*>(&sin), &len) != 0) {
    return FailErrno("getsockname");
  }
  if (bound != nullptr) {
    char text[INET_ADDRSTRLEN] = {};
    inet_ntop(AF_INET, &sin.sin_addr, text, sizeof text);
    bound->host = text;
    bound->port = ntohs(sin.sin_port);
  }
  return fd;
}

Result<UniqueFd> ConnectTcp(const HostPort& address, std::chrono::milliseconds timeout) {
  sockaddr_in sin = FLURRY_TRY(Resolve(address));
  UniqueFd fd(socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!fd.valid()) return FailErrno("socket");
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&sin), sizeof sin) != 0) {
    if (errno != EINPROGRESS) return FailErrno(fmt::format("connecting to {}", address.ToString()));
    pollfd p{fd.get(), POLLOUT, 0};
    int rc;
    do {
      rc = poll(&p, 1, static_cast<int>(timeout.count()));
    } while (rc < 0 && errno == EINTR);
    if (rc == 0) return FailErrno(ETIMEDOUT, fmt::format("connecting to {}", address.ToString()));
    int error = 0;
    socklen_t len = sizeof error;
    getsockopt(fd.get(), SOL_SOCKET, SO_ERROR, &error, &len);
    if (rc < 0 || error != 0) {
      return FailErrno(rc < 0 ? errno : error, fmt::format("connecting to {}", address.ToString()));
    }
  }
  const int flags = fcntl(fd.get(), F_GETFL);
  fcntl(fd.get(), F_SETFL, flags & ~O_NONBLOCK);
  FLURRY_TRY(ConfigureTcp(fd.get(), timeout));
  return fd;
}

Result<void> ReadFull(int fd, void* data, size_t n) {
  auto* bytes = static_cast<uint8_t*>(data);
  size_t done = 0;
  while (done < n) {
    ssize_t got = recv(fd, bytes + done, n - done, 0);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return FailErrno(ETIMEDOUT, "waiting for the peer");
    }
    if (got < 0) return FailErrno("receiving");
    if (got == 0) return Fail(done == 0 ? "closed" : "the peer closed the connection mid-message");
    done += static_cast<size_t>(got);
  }
  return {};
}

Result<void> WriteFull(int fd, const void* data, size_t n) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  size_t done = 0;
  while (done < n) {
    ssize_t put = send(fd, bytes + done, n - done, MSG_NOSIGNAL);
    if (put < 0 && errno == EINTR) continue;
    if (put < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      return FailErrno(ETIMEDOUT, "sending to the peer");
    }
    if (put < 0) return FailErrno("sending");
    done += static_cast<size_t>(put);
  }
  return {};
}

}  // namespace flurry
