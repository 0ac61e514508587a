// The page protocol: a VM's frozen memory image and descriptor served over TCP to VMs that
// restore from it (remote clones), docs/protocols/page_server.md. Plain structs, little-endian
// (x86-64 only), fixed sizes; every field a peer sends is checked before use.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"

namespace flurry {

inline constexpr uint32_t kPageProtocolMagic = 0x47504c46;  // "FLPG"
// 2: a connection starts with kHello; 3: the files of the VM's --dir (kFileTree, kFileRead);
// 4: page pushes to a multicast group (kPushGroup, net/page_push.h); the hello carries a proof
// of the key (PageKey::HelloProof), not the key; 5: kPagesUnlessPushed; 6: page requests
// carry the pushes the client lost (PageRequest::push_losses).
inline constexpr uint16_t kPageProtocolVersion = 6;
inline constexpr uint32_t kMaxPagesPerRequest = 64;
inline constexpr uint32_t kMaxDescriptorReplyBytes = 16u << 20;
inline constexpr uint32_t kMaxFileTreeReplyBytes = 16u << 20;
inline constexpr uint32_t kMaxFileReadBytes = 1u << 20;

enum class PageOp : uint16_t {
  kDescriptor = 1,  // reply payload: the encoded VM descriptor (docs/formats/descriptor.md)
  kPages = 2,       // reply payload: `count` 4 KiB pages from guest page `first_page`
  kHello = 3,       // the request is followed by PageKey::HelloProof (16 bytes); empty reply
  // reply payload: the encoded file tree of the VM's --dir (docs/protocols/page_server.md)
  kFileTree = 4,
  // reply payload: up to kMaxFileReadBytes bytes of file tree entry `count` from byte offset
  // `first_page` (empty at the end of the file)
  kFileRead = 5,
  // reply payload: the multicast group the server pushes pages to (PushGroupWire,
  // net/page_push.h); ENOENT when it pushes none
  kPushGroup = 6,
  // as kPages, or — where every page asked for was pushed to the group less than
  // kPushedReplyWindowMs ago — the "pushed" reply: count 0, no payload (take them from the
  // group, or ask again with kPages)
  kPagesUnlessPushed = 7,
};
inline constexpr uint32_t kPushedReplyWindowMs = 100;

// A "host:port" (IPv4 address or name; port 0 = any when listening) split and checked.
struct HostPort {
  std::string host;
  uint16_t port = 0;
  std::string ToString() const;
};
Result<HostPort> ParseHostPort(const std::string& text);

// The secret a page server hands out with its address (flurry ctl serve, a ticket's clones):
// only peers that know it get anything. Random, 128 bits; written as 32 hex digits.
inline constexpr size_t kPageKeyBytes = 16;
struct PageKey {
  std::array<uint8_t, kPageKeyBytes> bytes{};
  static Result<PageKey> Random();
  static Result<PageKey> FromHex(std::string_view hex);
  std::string Hex() const;
  // Constant time (a peer learns nothing from how long a wrong key takes).
  bool Matches(const uint8_t* other) const;
  // What a hello carries: SHA-256("flurry page hello" || key), its first 16 bytes. The key
  // itself never crosses the network, so that someone who reads the traffic cannot learn
  // what page pushes are authenticated with (net/page_push.h). Empty on a failed digest.
  std::optional<std::array<uint8_t, kPageKeyBytes>> HelloProof() const;
};

// A page server's address with its key: "HOST:PORT/KEY" (what `flurry ctl serve` prints and
// `flurry restore tcp://...` takes). `text` without "/KEY" gets `fallback_key` (from the
// environment, FLURRY_PAGE_KEY) when one is given.
struct PageServerAddress {
  HostPort server;
  PageKey key;
  std::string ToString() const;  // "HOST:PORT/KEY"
};
Result<PageServerAddress> ParsePageServerAddress(const std::string& text,
                                                 const std::optional<PageKey>& fallback_key);

struct PageRequest {
  uint32_t magic;
  uint16_t version;
  uint16_t op;  // PageOp
  uint64_t first_page;
  uint32_t count;
  // kPages, kPagesUnlessPushed: pushed datagrams the client's socket dropped for want of room
  // since its previous request (the server paces its pushes by them, net/push_pacer.h); 0 in
  // every other request.
  uint32_t push_losses;
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

// SHA-256 of `label` followed by `data`: the page protocol's key derivations (the hello proof,
// the push key). Empty when the digest fails.
std::optional<std::array<uint8_t, 32>> LabelledDigest(std::string_view label,
                                                      std::string_view data);

}  // namespace flurry
