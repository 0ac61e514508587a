#include "net/page_protocol.h"

#include <xxhash.h>

namespace flurry {

uint64_t PayloadChecksum(const void* data, size_t size) { return XXH64(data, size, 0); }

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

}  // namespace flurry
