#include "fork/standin_job.h"

#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <span>

#include "base/fd_passing.h"
#include "base/wait_readable.h"
#include "fork/outcome_channel.h"

namespace flurry {
namespace {

constexpr uint32_t kJobMagic = 0x4a534c46;    // "FLSJ"
constexpr uint32_t kMoreMagic = 0x46534c46;   // "FLSF"
constexpr uint32_t kReadyMagic = 0x52534c46;  // "FLSR"
constexpr uint16_t kVersion = 1;

struct ReadyMessage {
  uint32_t magic;
  uint16_t version;
  uint16_t zero;
};
static_assert(sizeof(ReadyMessage) == 8);

struct JobHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t reserved;
  uint32_t fd_count;
  uint32_t args_bytes;
  uint64_t checksum;
};
static_assert(sizeof(JobHeader) == 24);

struct MoreHeader {
  uint32_t magic;
  uint32_t count;
};
static_assert(sizeof(MoreHeader) == 8);

std::span<const uint8_t> BytesOf(const auto& object) {
  return {reinterpret_cast<const uint8_t*>(&object), sizeof object};
}

}  // namespace

Result<void> SendStandInJob(int socket, const std::vector<std::string>& args,
                            const std::vector<int>& fds) {
  if (args.empty()) return Fail("a stand-in job without arguments");
  std::string packed;
  for (const std::string& arg : args) {
    if (arg.find('\0') != std::string::npos) return Fail("an argument with a NUL byte");
    packed += arg;
    packed += '\0';
  }
  if (packed.size() > kMaxStandInJobArgBytes) {
    return Fail("{} bytes of arguments (at most {})", packed.size(), kMaxStandInJobArgBytes);
  }
  if (fds.size() > kMaxStandInJobFds) {
    return Fail("{} descriptors (at most {})", fds.size(), kMaxStandInJobFds);
  }
  JobHeader header{kJobMagic,
                   kVersion,
                   0,
                   static_cast<uint32_t>(fds.size()),
                   static_cast<uint32_t>(packed.size()),
                   Fnv1a64(reinterpret_cast<const uint8_t*>(packed.data()), packed.size())};
  std::vector<uint8_t> first(sizeof header + packed.size());
  std::memcpy(first.data(), &header, sizeof header);
  std::memcpy(first.data() + sizeof header, packed.data(), packed.size());
  size_t sent = std::min(fds.size(), kMaxFdsPerMessage);
  FLURRY_TRY_CTX(SendWithFds(socket, first, std::span(fds.data(), sent)),
                 "handing the spare stand-in its job");
  while (sent < fds.size()) {
    const size_t n = std::min(fds.size() - sent, kMaxFdsPerMessage);
    const MoreHeader more{kMoreMagic, static_cast<uint32_t>(n)};
    FLURRY_TRY_CTX(SendWithFds(socket, BytesOf(more), std::span(fds.data() + sent, n)),
                   "handing the spare stand-in its job");
    sent += n;
  }
  return {};
}

Result<StandInJob> ReceiveStandInJob(int socket) {
  StandInJob job;
  std::vector<uint8_t> buffer(sizeof(JobHeader) + kMaxStandInJobArgBytes);
  const size_t n = FLURRY_TRY_CTX(ReceiveWithFds(socket, buffer, &job.fds), "a stand-in job");
  if (n == 0) return FailErrno(ECONNRESET, "no stand-in job came");
  JobHeader header;
  if (n < sizeof header) return Fail("a stand-in job of {} bytes", n);
  std::memcpy(&header, buffer.data(), sizeof header);
  if (header.magic != kJobMagic) return Fail("a stand-in job with magic {:#x}", header.magic);
  if (header.version != kVersion) return Fail("a stand-in job of version {}", header.version);
  if (header.args_bytes != n - sizeof header || header.args_bytes > kMaxStandInJobArgBytes ||
      header.fd_count > kMaxStandInJobFds) {
    return Fail("a stand-in job of {} bytes naming {} bytes of arguments and {} descriptors", n,
                header.args_bytes, header.fd_count);
  }
  const uint8_t* args = buffer.data() + sizeof header;
  if (Fnv1a64(args, header.args_bytes) != header.checksum) {
    return Fail("a stand-in job whose arguments do not match their checksum");
  }
  // At least argv[0], the program's name, as on a command line.
  if (header.args_bytes == 0 || args[header.args_bytes - 1] != '\0') {
    return Fail("a stand-in job without arguments, or whose last is not NUL-terminated");
  }
  for (size_t at = 0; at < header.args_bytes;) {
    const std::string arg(reinterpret_cast<const char*>(args + at));
    at += arg.size() + 1;
    job.args.push_back(arg);
  }
  while (job.fds.size() < header.fd_count) {
    const size_t before = job.fds.size();
    MoreHeader more;
    const size_t got = FLURRY_TRY_CTX(
        ReceiveWithFds(socket, std::span(reinterpret_cast<uint8_t*>(&more), sizeof more), &job.fds),
        "the rest of a stand-in job's descriptors");
    if (got != sizeof more || more.magic != kMoreMagic || more.count != job.fds.size() - before) {
      return Fail("a malformed message in a stand-in job ({} bytes)", got);
    }
  }
  if (job.fds.size() != header.fd_count) {
    return Fail("a stand-in job with {} descriptors instead of {}", job.fds.size(),
                header.fd_count);
  }
  return job;
}

Result<void> SendSpareReady(int socket) {
  const ReadyMessage ready{kReadyMagic, kVersion, 0};
  const ssize_t n = send(socket, &ready, sizeof ready, MSG_NOSIGNAL);
  if (n != static_cast<ssize_t>(sizeof ready)) {
    return FailErrno("sending the spare's ready message");
  }
  return {};
}

Result<void> ReceiveSpareReady(int socket, std::chrono::steady_clock::time_point until) {
  FLURRY_TRY(WaitReadable(socket, until, "the spare stand-in is not ready"));
  ReadyMessage message{};
  const ssize_t n = recv(socket, &message, sizeof message, MSG_DONTWAIT);
  if (n == 0) return FailErrno(ECONNRESET, "the spare stand-in has ended");
  if (n < 0) return FailErrno("the spare stand-in's ready message");
  if (n != static_cast<ssize_t>(sizeof message) || message.magic != kReadyMagic ||
      message.version != kVersion || message.zero != 0) {
    return FailErrno(EPROTO, "the spare stand-in sent no ready message");
  }
  return {};
}

}  // namespace flurry
