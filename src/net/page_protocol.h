// The page protocol: a VM's frozen memory image and descriptor served over TCP to VMs that
// restore from it (remote clones), docs/protocols/page_server.md. Plain structs, little-endian
// (x86-64 only), fixed sizes; every field a peer sends is checked before use.
#pragma once

#include <cstdint>
#include <string>

#include "base/error.h"

namespace flurry {

inline constexpr uint32_t kPageProtocolMagic = 0x47504c46;  // "FLPG"
inline constexpr uint16_t kPageProtocolVersion = 1;
inline constexpr uint32_t kMaxPagesPerRequest = 64;
inline constexpr uint32_t kMaxDescriptorReplyBytes = 16u << 20;

enum class PageOp : uint16_t {
  kDescriptor = 1,  // reply payload: the encoded VM descriptor (docs/formats/descriptor.md)
  kPages = 2,       // reply payload: `count` 4 KiB pages from guest page `first_page`
};

struct PageRequest {
  uint32_t magic;
  uint16_t version;
  uint16_t op;  // PageOp
  uint64_t first_page;
  uint32_t count;
  uint32_t reserved;  // 0
};
static_assert(sizeof(PageRequest) == 24);

struct PageReplyHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t status;  // 0, or an errno value (payload empty)
  uint64_t first_page;
  uint32_t count;
  uint32_t payload_bytes;
  uint64_t checksum;  // XXH64 (seed 0) of the payload
  // pages: bit i set = page first_page+i is all zero and left out of the payload (the payload
  // holds the other pages in order).
  uint64_t zero_mask;
};
static_assert(sizeof(PageReplyHeader) == 40);

uint64_t PayloadChecksum(const void* data, size_t size);

// A "host:port" (IPv4 address or name; port 0 = any when listening) split and checked.
struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const;
};
Result<HostPort> ParseHostPort(const std::string& text);

}  // namespace flurry
