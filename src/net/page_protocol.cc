#include "net/page_protocol.h"

#include <nettle/sha2.h>
#include <sys/random.h>
#include <xxhash.h>

#include <algorithm>
#include <string>

namespace flurry {

uint64_t PayloadChecksum(const void* data, size_t size) { return XXH64(data, size, 0); }

std::optional<std::array<uint8_t, 32>> LabelledDigest(std::string_view label,
                                                      std::string_view data) {
  // Nettle's SHA-256: OpenSSL's EVP would cost each clone's VMM milliseconds of setup here.
  sha256_ctx sha;
  sha256_init(&sha);
  sha256_update(&sha, label.size(), reinterpret_cast<const uint8_t*>(label.data()));
  sha256_update(&sha, data.size(), reinterpret_cast<const uint8_t*>(data.data()));
  std::array<uint8_t, 32> digest{};
  static_assert(SHA256_DIGEST_SIZE == 32);
  sha256_digest(&sha, digest.size(), digest.data());
  return digest;
}

std::string HostPort::ToString() const { return fmt::format("{}:{}", host, port); }

Result<HostPort> ParseHostPort(const std::string& text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return Fail("{:?}: expected HOST:PORT", text);
  }
  HostPort hp;
  hp.host = text.substr(0, colon);
  const std::string port = text.substr(colon + 1);
  uint64_t value = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || value > 65535) return Fail("{:?}: bad port", text);
    value = value * 10 + static_cast<uint64_t>(c - '0');
  }
  if (value > 65535) return Fail("{:?}: bad port", text);
  hp.port = static_cast<uint16_t>(value);
  return hp;
}

Result<PageKey> PageKey::Random() {
  PageKey key;
  if (getrandom(key.bytes.data(), key.bytes.size(), 0) != static_cast<ssize_t>(key.bytes.size())) {
    return FailErrno("getrandom for a page server key");
  }
  return key;
}

Result<PageKey> PageKey::FromHex(std::string_view hex) {
  if (hex.size() != 2 * kPageKeyBytes) {
    return Fail("a page server key is {} hex digits, not {}", 2 * kPageKeyBytes, hex.size());
  }
  PageKey key;
  for (size_t i = 0; i < kPageKeyBytes; ++i) {
    uint8_t byte = 0;
    for (char c : hex.substr(2 * i, 2)) {
      uint8_t nibble;
      if (c >= '0' && c <= '9') {
        nibble = static_cast<uint8_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        nibble = static_cast<uint8_t>(c - 'a' + 10);
      } else {
        return Fail("a page server key holds hex digits (0-9a-f) only");
      }
      byte = static_cast<uint8_t>(byte << 4 | nibble);
    }
    key.bytes[i] = byte;
  }
  return key;
}

std::string PageKey::Hex() const {
  std::string hex;
  for (uint8_t b : bytes) hex += fmt::format("{:02x}", b);
  return hex;
}

bool PageKey::Matches(const uint8_t* other) const {
  uint8_t difference = 0;
  for (size_t i = 0; i < kPageKeyBytes; ++i) difference |= bytes[i] ^ other[i];
  return difference == 0;
}

std::optional<std::array<uint8_t, kPageKeyBytes>> PageKey::HelloProof() const {
  const auto digest =
      LabelledDigest("flurry page hello",
                     std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()));
  if (!digest) return std::nullopt;
  std::array<uint8_t, kPageKeyBytes> proof{};
  std::copy_n(digest->begin(), proof.size(), proof.begin());
  return proof;
}

std::string PageServerAddress::ToString() const { return server.ToString() + "/" + key.Hex(); }

Result<PageServerAddress> ParsePageServerAddress(const std::string& text,
                                                 const std::optional<PageKey>& fallback_key) {
  PageServerAddress address;
  const size_t slash = text.find('/');
  address.server = FLURRY_TRY(ParseHostPort(text.substr(0, slash)));
  if (slash != std::string::npos) {
    address.key = FLURRY_TRY_CTX(PageKey::FromHex(text.substr(slash + 1)), text);
  } else if (fallback_key) {
    address.key = *fallback_key;
  } else {
    return Fail("{:?}: no key (HOST:PORT/KEY, as `flurry ctl ... serve` prints it)", text);
  }
  return address;
}

}  // namespace flurry
