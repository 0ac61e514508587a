// Page pushes: one multicast datagram carries pages a page server sent to one clone to every
// clone of the same VM that joined the server's group (docs/protocols/page_push.md). SnowFlock's
// multicast distribution: clones scanning the same memory each get a page once from the wire,
// whoever asked for it first, and the server reads, checks and sends it once.
//
// Pushes are an addition to the page protocol, never a replacement: a clone still asks for
// every page it faults on over TCP, and a push that is lost, late, forged or malformed is
// dropped (the page is then fetched). So loss, reordering and duplicates change no result.
// The sender never blocks: a datagram the socket cannot take now is dropped and counted. The
// server pushes only what clones asked for (its flow is the clones' demand), and no faster
// than the clones take it: each clone counts the pushes its socket had no room for and
// reports them with its next page request, and the sender paces itself by those reports
// (net/push_pacer.h).
//
// Datagrams are authenticated (AES-128-GCM tag over header and payload, keyed from the page
// key and the session; the nonce is the session and a counter). The page key never crosses
// the network (the hello carries a one-way proof of it), so only holders of the key — the
// server and the VM's clones, which trust each other — can make a datagram that is installed.
// A replayed datagram is harmless: the image it comes from never changes.
//
// Threads: PushSender belongs to the page server's thread; PushReceiver to its LazyPages'
// handler thread.
#pragma once

#include <netinet/in.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/clock.h"
#include "base/error.h"
#include "base/unique_fd.h"
#include "memory/page_source.h"
#include "net/page_protocol.h"
#include "net/push_pacer.h"

namespace flurry {

inline constexpr uint32_t kPushMagic = 0x4d504c46;  // "FLPM"
inline constexpr uint16_t kPushVersion = 1;
inline constexpr uint32_t kMaxPagesPerPush = 15;  // a datagram of at most 60 KiB + header
inline constexpr size_t kPushTagBytes = 16;

// The reply payload of PageOp::kPushGroup: where the server pushes.
struct PushGroupWire {
  uint32_t group;  // IPv4 multicast address, network byte order
  uint16_t port;   // host byte order
  uint8_t ttl;
  uint8_t reserved;  // 0
  uint64_t session;  // names this server's datagrams; never 0
};
static_assert(sizeof(PushGroupWire) == 16);

struct PushHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t count;  // pages, 1..kMaxPagesPerPush
  uint64_t session;
  uint64_t sequence;  // per session, never repeated (with the session: the tag's nonce)
  uint64_t first_page;
  uint32_t zero_mask;      // bit i: page first_page+i is all zero and not in the payload
  uint32_t payload_bytes;  // (count - zero pages) * 4096
  std::array<uint8_t, kPushTagBytes> tag;  // over the header (tag zeroed) and the payload
};
static_assert(sizeof(PushHeader) == 56);

struct PushGroup {
  in_addr group{};
  uint16_t port = 0;
  uint8_t ttl = 1;
  uint64_t session = 0;
  std::string ToString() const;  // "239.255.1.2:7000"
};

// Checks a kPushGroup reply payload.
Result<PushGroup> DecodePushGroup(const uint8_t* data, size_t size);
PushGroupWire EncodePushGroup(const PushGroup& group);

// The tag key of a page server's pushes: SHA-256("flurry page push key" || page key ||
// session), its first 16 bytes. Empty on a failed digest.
using PushKey = std::array<uint8_t, 16>;
std::optional<PushKey> DerivePushKey(const PageKey& key, uint64_t session);
// The tag of a datagram: AES-128-GCM (no plaintext) over `header` with its tag zeroed, then
// `payload`. Empty on a cipher failure.
std::optional<std::array<uint8_t, kPushTagBytes>> PushTag(const PushKey& key,
                                                          const PushHeader& header,
                                                          const uint8_t* payload,
                                                          size_t payload_bytes);

// PushTag for every datagram of one session: the AES key schedule and the GHASH table (4 KiB)
// are made once, not per datagram. Immutable once made: any thread.
class PushTagger {
 public:
  explicit PushTagger(const PushKey& key);
  ~PushTagger();
  PushTagger(PushTagger&&) noexcept;
  PushTagger& operator=(PushTagger&&) noexcept;
  std::array<uint8_t, kPushTagBytes> Tag(const PushHeader& header, const uint8_t* payload,
                                         size_t payload_bytes) const;

 private:
  struct Keys;  // Nettle's contexts (kept out of this header)
  std::unique_ptr<Keys> keys_;
};

// The page server's side: a UDP socket sending to the group through the interface of
// `interface_address` (the address the server listens on; the clones reach it there).
class PushSender {
 public:
  struct Stats {
    uint64_t datagrams = 0;
    uint64_t pages = 0;
    uint64_t bytes = 0;
    uint64_t dropped = 0;     // datagrams the socket would not take at once
    uint64_t suppressed = 0;  // pages not pushed again: pushed a moment ago
    uint64_t paced = 0;       // pages not pushed: over the pacer's rate
    uint64_t losses = 0;      // datagrams the clones reported lost (NoteLosses)
    uint64_t rate_cuts = 0;   // times the pacer halved its rate
  };
  // A random group in 239.255.0.0/16 (administratively scoped, this site only), the port of
  // the server (`port`), TTL 1: the clones' segment. A page pushed less than `repush_after`
  // ago is not pushed again; a request "unless pushed" for pages all pushed less than
  // `pushed_reply_window` ago is answered "pushed" (page_server.cc).
  static Result<std::unique_ptr<PushSender>> Open(
      const std::string& interface_address, uint16_t port, const PageKey& key, uint64_t page_count,
      std::chrono::milliseconds repush_after = std::chrono::milliseconds(20),
      std::chrono::milliseconds pushed_reply_window =
          std::chrono::milliseconds(kPushedReplyWindowMs));
  const PushGroup& group() const { return group_; }
  // Pushes pages [first_page, first_page+count) as a page reply holds them: `zero_mask` bit i
  // set = page i is all zero and absent from `payload` (the other pages in order).
  void Push(uint64_t first_page, uint32_t count, uint64_t zero_mask, const uint8_t* payload);
  // Whether every page of [first_page, first_page+count) went out less than `window_ms` ago
  // (a datagram the socket did not take does not count).
  bool PushedWithin(uint64_t first_page, uint32_t count, uint32_t window_ms) const;
  uint32_t pushed_reply_window_ms() const { return pushed_reply_window_ms_; }
  // The clones that take pushes, by an id of the server's (PushPacer's receivers).
  void AddReceiver(uint64_t id) { pacer_.AddReceiver(id); }
  void RemoveReceiver(uint64_t id) { pacer_.RemoveReceiver(id); }
  // Clone `receiver`'s page request said it lost `datagrams` pushes (its socket had no room).
  void NoteLosses(uint64_t receiver, uint32_t datagrams);
  const Stats& stats() const { return stats_; }
  double rate() const { return pacer_.rate(); }  // bytes/s the pacer lets out now
  // The sender's time from `clock` (ns), not the monotonic clock; the sender starts anew
  // (nothing pushed yet, the pacer at its start).
  void SetClockForTesting(std::function<int64_t()> clock);

 private:
  PushSender() = default;
  // Whether the socket took the datagram.
  bool SendChunk(uint64_t first_page, uint32_t count, uint32_t zero_mask, const uint8_t* payload,
                 uint32_t payload_bytes);
  uint32_t MsSinceStart(int64_t now_ns) const;  // from 1 (0 means never)

  UniqueFd fd_;
  PushGroup group_;
  std::optional<PushTagger> tagger_;
  uint64_t sequence_ = 0;
  uint32_t repush_after_ms_ = 20;
  uint32_t pushed_reply_window_ms_ = kPushedReplyWindowMs;
  std::vector<uint32_t> pushed_at_ms_;  // per page: when it was last pushed (0: never)
  int64_t start_ns_ = 0;
  std::function<int64_t()> clock_ = MonotonicNs;  // the sender's and its pacer's time
  PushPacer pacer_{0};
  Stats stats_;
};

// The pushes a clone lost, shared by its PushReceiver (which learns them from the kernel's
// count of datagrams its socket dropped, SO_MEMINFO) and its PageClient (which reports them
// to the server with its next page request). Any thread.
struct PushLosses {
  std::atomic<uint64_t> dropped{0};
};

// A clone's side: joined to the group on the interface of `local_address` (its address toward
// the server), taking the server's datagrams.
class PushReceiver : public PagePushes {
 public:
  // `losses`, when given, gets the count of datagrams the socket dropped.
  static Result<std::unique_ptr<PushReceiver>> Join(const PushGroup& group,
                                                    const in_addr& local_address,
                                                    const PageKey& key, uint64_t page_count,
                                                    std::shared_ptr<PushLosses> losses = nullptr);
  int fd() const override { return fd_.get(); }
  bool TakeNext(const WantedPages& wanted, std::optional<PushedPages>* pushed) override;
  uint64_t bytes_received() const override { return bytes_; }
  uint64_t rejected() const override { return rejected_; }
  uint64_t lost() const override { return lost_; }
  std::string Describe() const override { return "multicast group " + group_.ToString(); }

 private:
  PushReceiver() = default;
  // Counts the datagrams the socket dropped since the last call (SO_MEMINFO).
  void NoteDrops();
  UniqueFd fd_;
  PushGroup group_;
  std::optional<PushTagger> tagger_;
  uint64_t page_count_ = 0;
  std::vector<uint8_t> buffer_;
  uint64_t bytes_ = 0;
  uint64_t rejected_ = 0;
  uint64_t lost_ = 0;  // the socket's drops, as of the last TakeNext that found a datagram
  std::shared_ptr<PushLosses> losses_;
};

}  // namespace flurry
