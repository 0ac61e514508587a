#include "fork/clone_vmm_request.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "fork/outcome_channel.h"

namespace flurry {
namespace {

constexpr uint32_t kMagic = 0x57594c46;  // "FLYW"
constexpr uint16_t kVersion = 1;

struct Header {
  uint32_t magic;
  uint16_t version;
  uint16_t strings;
  uint32_t payload_length;
  uint32_t reserved;
  uint64_t checksum;
};
static_assert(sizeof(Header) == 24);

// Reads exactly `length` bytes; false at EOF before the first one.
Result<bool> ReadExactly(int fd, uint8_t* data, size_t length) {
  size_t done = 0;
  while (done < length) {
    const ssize_t n = read(fd, data + done, length - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FailErrno("reading the clone VMM request");
    if (n == 0) {
      if (done == 0) return false;
      return Fail("clone VMM request truncated after {} of {} bytes", done, length);
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

Result<std::vector<uint8_t>> EncodeCloneVmmRequest(const CloneVmmRequest& request) {
  std::vector<const std::string*> strings = {&request.work_dir, &request.page_key};
  for (const std::string& arg : request.args) strings.push_back(&arg);
  if (strings.size() > kCloneVmmRequestMaxStrings) {
    return Fail("clone VMM request: {} strings, at most {}", strings.size(),
                kCloneVmmRequestMaxStrings);
  }
  std::vector<uint8_t> payload;
  for (const std::string* s : strings) {
    if (s->find('\0') != std::string::npos) return Fail("clone VMM request: a NUL in a string");
    payload.insert(payload.end(), s->begin(), s->end());
    payload.push_back(0);
  }
  if (payload.size() > kCloneVmmRequestMaxPayload) {
    return Fail("clone VMM request: {} bytes, at most {}", payload.size(),
                kCloneVmmRequestMaxPayload);
  }
  const Header header{kMagic,
                      kVersion,
                      static_cast<uint16_t>(strings.size()),
                      static_cast<uint32_t>(payload.size()),
                      0,
                      Fnv1a64(payload.data(), payload.size())};
  std::vector<uint8_t> bytes(sizeof header);
  std::memcpy(bytes.data(), &header, sizeof header);
  bytes.insert(bytes.end(), payload.begin(), payload.end());
  return bytes;
}

namespace {

Result<Header> CheckHeader(std::span<const uint8_t> bytes) {
  Header header{};
  if (bytes.size() < sizeof header) return Fail("clone VMM request: {} bytes", bytes.size());
  std::memcpy(&header, bytes.data(), sizeof header);
  if (header.magic != kMagic) return Fail("clone VMM request: bad magic {:#x}", header.magic);
  if (header.version != kVersion) return Fail("clone VMM request: version {}", header.version);
  if (header.strings < 2 || header.strings > kCloneVmmRequestMaxStrings) {
    return Fail("clone VMM request: {} strings", header.strings);
  }
  if (header.payload_length > kCloneVmmRequestMaxPayload) {
    return Fail("clone VMM request: payload of {} bytes exceeds the cap", header.payload_length);
  }
  return header;
}

}  // namespace

Result<CloneVmmRequest> DecodeCloneVmmRequest(std::span<const uint8_t> bytes) {
  const Header header = FLURRY_TRY(CheckHeader(bytes));
  const std::span<const uint8_t> payload = bytes.subspan(sizeof header);
  if (payload.size() != header.payload_length) {
    return Fail("clone VMM request: payload of {} bytes, the header says {}", payload.size(),
                header.payload_length);
  }
  if (Fnv1a64(payload.data(), payload.size()) != header.checksum) {
    return Fail("clone VMM request: checksum mismatch");
  }
  std::vector<std::string> strings;
  size_t at = 0;
  while (at < payload.size()) {
    const auto* begin = reinterpret_cast<const char*>(payload.data()) + at;
    const void* nul = std::memchr(begin, 0, payload.size() - at);
    if (nul == nullptr) return Fail("clone VMM request: a string without its NUL");
    const size_t length = static_cast<size_t>(static_cast<const char*>(nul) - begin);
    strings.emplace_back(begin, length);
    at += length + 1;
  }
  if (strings.size() != header.strings) {
    return Fail("clone VMM request: {} strings, the header says {}", strings.size(),
                header.strings);
  }
  CloneVmmRequest request;
  request.work_dir = std::move(strings[0]);
  request.page_key = std::move(strings[1]);
  request.args.assign(std::make_move_iterator(strings.begin() + 2),
                      std::make_move_iterator(strings.end()));
  return request;
}

Result<void> SendCloneVmmRequest(int fd, const CloneVmmRequest& request) {
  const std::vector<uint8_t> bytes = FLURRY_TRY(EncodeCloneVmmRequest(request));
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = send(fd, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FailErrno("sending the clone VMM its request");
    done += static_cast<size_t>(n);
  }
  return {};
}

Result<std::optional<CloneVmmRequest>> ReceiveCloneVmmRequest(int fd) {
  std::vector<uint8_t> bytes(sizeof(Header));
  if (!FLURRY_TRY(ReadExactly(fd, bytes.data(), bytes.size()))) return std::nullopt;
  const Header header = FLURRY_TRY(CheckHeader(bytes));
  bytes.resize(sizeof header + header.payload_length);
  if (header.payload_length > 0 &&
      !FLURRY_TRY(ReadExactly(fd, bytes.data() + sizeof header, header.payload_length))) {
    return Fail("clone VMM request truncated before its payload");
  }
  return DecodeCloneVmmRequest(bytes);
}

}  // namespace flurry
