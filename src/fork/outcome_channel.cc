#include "fork/outcome_channel.h"

#include <unistd.h>

#include <cstring>

#include "flurry/sf_abi.h"

namespace flurry {
namespace {

constexpr uint32_t kMagic = 0x4f594c46;  // "FLYO"
constexpr uint16_t kVersion = 1;

struct Header {
  uint32_t magic;
  uint16_t version;
  uint16_t kind;
  int32_t status;
  int32_t signal;
  uint64_t result_length;
  uint64_t checksum;
};
static_assert(sizeof(Header) == 32);

Result<void> WriteAll(int fd, const void* data, size_t length) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (length > 0) {
    ssize_t n = write(fd, p, length);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FailErrno("sending the clone outcome");
    p += n;
    length -= static_cast<size_t>(n);
  }
  return {};
}

// Reads exactly `length` bytes; returns false at a clean EOF before the first byte.
Result<bool> ReadAll(int fd, void* data, size_t length) {
  auto* p = static_cast<uint8_t*>(data);
  size_t done = 0;
  while (done < length) {
    ssize_t n = read(fd, p + done, length - done);
    // An interruption before the first byte is reported (the caller may be asked to stop);
    // once a message has started it is read to its end.
    if (n < 0 && errno == EINTR && done > 0) continue;
    if (n < 0) return FailErrno(errno, "reading a clone outcome");
    if (n == 0) {
      if (done == 0) return false;
      return Fail("clone outcome truncated after {} of {} bytes", done, length);
    }
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

size_t MaxOutcomeBytes() { return sizeof(Header) + SF_MAX_RESULT; }

uint64_t Fnv1a64(const uint8_t* data, size_t length) {
  uint64_t hash = 0xcbf29ce484222325ULL;
  for (size_t i = 0; i < length; ++i) hash = (hash ^ data[i]) * 0x100000001b3ULL;
  return hash;
}

Result<void> SendOutcome(int fd, const CloneOutcome& outcome) {
  if (outcome.result.size() > SF_MAX_RESULT) return Fail("clone result too large");
  Header header{kMagic,
                kVersion,
                static_cast<uint16_t>(outcome.kind),
                outcome.status,
                outcome.signal,
                outcome.result.size(),
                Fnv1a64(outcome.result.data(), outcome.result.size())};
  FLURRY_TRY(WriteAll(fd, &header, sizeof header));
  return WriteAll(fd, outcome.result.data(), outcome.result.size());
}

namespace {

// Checks a header and fills `outcome` from it (the result is sized, not yet read).
Result<void> CheckHeader(const Header& header, CloneOutcome& outcome) {
  if (header.magic != kMagic) return Fail("clone outcome: bad magic {:#x}", header.magic);
  if (header.version != kVersion) return Fail("clone outcome: version {}", header.version);
  if (header.kind < SF_OUTCOME_EXITED || header.kind > SF_OUTCOME_LOST) {
    return Fail("clone outcome: bad kind {}", header.kind);
  }
  if (header.result_length > SF_MAX_RESULT) {
    return Fail("clone outcome: result of {} bytes exceeds the cap", header.result_length);
  }
  outcome.kind = header.kind;
  outcome.status = header.status;
  outcome.signal = header.signal;
  outcome.result.resize(header.result_length);
  return {};
}

Result<void> CheckResult(const Header& header, const CloneOutcome& outcome) {
  if (Fnv1a64(outcome.result.data(), outcome.result.size()) != header.checksum) {
    return Fail("clone outcome: result checksum mismatch");
  }
  return {};
}

}  // namespace

Result<CloneOutcome> ReceiveOutcome(int fd) {
  Header header{};
  CloneOutcome outcome;
  bool got = FLURRY_TRY(ReadAll(fd, &header, sizeof header));
  if (!got) {
    outcome.kind = SF_OUTCOME_LOST;
    return outcome;
  }
  FLURRY_TRY(CheckHeader(header, outcome));
  if (header.result_length > 0) {
    bool complete = FLURRY_TRY(ReadAll(fd, outcome.result.data(), outcome.result.size()));
    if (!complete) return Fail("clone outcome truncated before its result");
  }
  FLURRY_TRY(CheckResult(header, outcome));
  return outcome;
}

Result<CloneOutcome> DecodeOutcome(std::span<const uint8_t> bytes) {
  CloneOutcome outcome;
  if (bytes.empty()) {
    outcome.kind = SF_OUTCOME_LOST;
    return outcome;
  }
  Header header{};
  if (bytes.size() < sizeof header) return Fail("clone outcome truncated in its header");
  std::memcpy(&header, bytes.data(), sizeof header);
  FLURRY_TRY(CheckHeader(header, outcome));
  if (bytes.size() != sizeof header + header.result_length) {
    return Fail("clone outcome of {} bytes, its header says {}", bytes.size(),
                sizeof header + header.result_length);
  }
  if (header.result_length > 0) {  // an empty vector's data() may be null: no memcpy then
    std::memcpy(outcome.result.data(), bytes.data() + sizeof header, header.result_length);
  }
  FLURRY_TRY(CheckResult(header, outcome));
  return outcome;
}

}  // namespace flurry
