#include "net/page_push.h"

#include <arpa/inet.h>
#include <linux/sock_diag.h>
#include <nettle/aes.h>
#include <nettle/gcm.h>
#include <nettle/memops.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <chrono>
#include <cstring>
#include <string>

#include "base/clock.h"

namespace flurry {
namespace {

constexpr uint64_t kPage = 4096;
constexpr int kSocketBufferBytes = 8 << 20;
constexpr size_t kMaxDatagram = sizeof(PushHeader) + kMaxPagesPerPush * kPage;

// The GCM nonce: the session's low 32 bits and the sequence number.
std::array<uint8_t, 12> Nonce(uint64_t session, uint64_t sequence) {
  std::array<uint8_t, 12> nonce{};
  const uint32_t low = static_cast<uint32_t>(session);
  std::memcpy(nonce.data(), &low, 4);
  std::memcpy(nonce.data() + 4, &sequence, 8);
  return nonce;
}

bool IsMulticast(in_addr address) { return (ntohl(address.s_addr) >> 28) == 0xe; }

// A socket buffer of kSocketBufferBytes: past the system's cap where this process may (root),
// else as large as the cap allows. (A full buffer only drops pushes.)
void EnlargeBuffer(int fd, int force_option, int option) {
  if (setsockopt(fd, SOL_SOCKET, force_option, &kSocketBufferBytes, sizeof kSocketBufferBytes) !=
      0) {
    (void)setsockopt(fd, SOL_SOCKET, option, &kSocketBufferBytes, sizeof kSocketBufferBytes);
  }
}

}  // namespace

std::string PushGroup::ToString() const {
  char text[INET_ADDRSTRLEN] = "?";
  inet_ntop(AF_INET, &group, text, sizeof text);
  return fmt::format("{}:{}", text, port);
}

PushGroupWire EncodePushGroup(const PushGroup& group) {
  PushGroupWire wire{};
  wire.group = group.group.s_addr;
  wire.port = group.port;
  wire.ttl = group.ttl;
  wire.session = group.session;
  return wire;
}

Result<PushGroup> DecodePushGroup(const uint8_t* data, size_t size) {
  if (size != sizeof(PushGroupWire)) {
    return FailErrno(
        EPROTO, fmt::format("a {}-byte push group (expected {})", size, sizeof(PushGroupWire)));
  }
  PushGroupWire wire;
  std::memcpy(&wire, data, sizeof wire);
  PushGroup group;
  group.group.s_addr = wire.group;
  group.port = wire.port;
  group.ttl = wire.ttl;
  group.session = wire.session;
  if (!IsMulticast(group.group) || group.port == 0 || group.ttl == 0 || wire.reserved != 0 ||
      group.session == 0) {
    return FailErrno(EPROTO, fmt::format("a push group that is not one: {} ttl {} session {:#x}",
                                         group.ToString(), group.ttl, group.session));
  }
  return group;
}

std::optional<PushKey> DerivePushKey(const PageKey& key, uint64_t session) {
  std::string data(reinterpret_cast<const char*>(key.bytes.data()), key.bytes.size());
  data.append(reinterpret_cast<const char*>(&session), sizeof session);
  const auto digest = LabelledDigest("flurry page push key", data);
  if (!digest) return std::nullopt;
  PushKey out{};
  std::copy_n(digest->begin(), out.size(), out.begin());
  return out;
}

struct PushTagger::Keys {
  aes128_ctx cipher;
  gcm_key hash;
};

PushTagger::PushTagger(const PushKey& key) : keys_(std::make_unique<Keys>()) {
  aes128_set_encrypt_key(&keys_->cipher, key.data());
  gcm_set_key(&keys_->hash, &keys_->cipher, reinterpret_cast<nettle_cipher_func*>(aes128_encrypt));
}

PushTagger::~PushTagger() = default;
PushTagger::PushTagger(PushTagger&&) noexcept = default;
PushTagger& PushTagger::operator=(PushTagger&&) noexcept = default;

std::array<uint8_t, kPushTagBytes> PushTagger::Tag(const PushHeader& header, const uint8_t* payload,
                                                   size_t payload_bytes) const {
  // GMAC: AES-128-GCM with no plaintext and the header (tag zeroed) then the payload as the
  // associated data (Nettle: no per-process setup, unlike OpenSSL's EVP, whose first use
  // costs each clone's VMM milliseconds).
  PushHeader covered = header;
  covered.tag = {};
  const auto nonce = Nonce(header.session, header.sequence);
  auto* const encrypt = reinterpret_cast<nettle_cipher_func*>(aes128_encrypt);
  gcm_ctx message;
  gcm_set_iv(&message, &keys_->hash, nonce.size(), nonce.data());
  // Nettle takes the data in pieces of whole 16-byte blocks but the last: the header's first
  // 48 bytes, then its last 8 with the payload's first 8, then the rest of the payload.
  static_assert(sizeof(PushHeader) % 16 == 8);
  const auto* bytes = reinterpret_cast<const uint8_t*>(&covered);
  constexpr size_t kWhole = sizeof(PushHeader) - 8;
  gcm_update(&message, &keys_->hash, kWhole, bytes);
  uint8_t block[16];
  std::memcpy(block, bytes + kWhole, 8);
  const size_t head = std::min<size_t>(8, payload_bytes);
  if (head > 0) std::memcpy(block + 8, payload, head);
  gcm_update(&message, &keys_->hash, 8 + head, block);
  if (payload_bytes > head) {
    gcm_update(&message, &keys_->hash, payload_bytes - head, payload + head);
  }
  std::array<uint8_t, kPushTagBytes> tag{};
  gcm_digest(&message, &keys_->hash, &keys_->cipher, encrypt, tag.size(), tag.data());
  return tag;
}

std::optional<std::array<uint8_t, kPushTagBytes>> PushTag(const PushKey& key,
                                                          const PushHeader& header,
                                                          const uint8_t* payload,
                                                          size_t payload_bytes) {
  return PushTagger(key).Tag(header, payload, payload_bytes);
}

Result<std::unique_ptr<PushSender>> PushSender::Open(
    const std::string& interface_address, uint16_t port, const PageKey& key, uint64_t page_count,
    std::chrono::milliseconds repush_after, std::chrono::milliseconds pushed_reply_window) {
  auto sender = std::unique_ptr<PushSender>(new PushSender());
  uint8_t random[10];
  if (getrandom(random, sizeof random, 0) != sizeof random) return FailErrno("getrandom");
  // 239.255.x.y, x.y random but not 0.0 / 255.255.
  const uint32_t low = (uint32_t{random[0]} << 8 | random[1]) % 0xfffe + 1;
  sender->group_.group.s_addr = htonl(0xefff0000u | low);
  sender->group_.port = port;
  sender->group_.ttl = 1;
  std::memcpy(&sender->group_.session, random + 2, 8);
  if (sender->group_.session == 0) sender->group_.session = 1;
  const auto push_key = DerivePushKey(key, sender->group_.session);
  if (!push_key) return Fail("page pushes: deriving the key");
  sender->tagger_.emplace(*push_key);
  sender->repush_after_ms_ = static_cast<uint32_t>(std::max<int64_t>(0, repush_after.count()));
  sender->pushed_reply_window_ms_ =
      static_cast<uint32_t>(std::clamp<int64_t>(pushed_reply_window.count(), 0, 1 << 30));
  sender->pushed_at_ms_.assign(page_count, 0);
  sender->start_ns_ = sender->clock_();
  sender->pacer_ = PushPacer(sender->start_ns_);

  sender->fd_.Reset(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!sender->fd_.valid()) return FailErrno("a socket for page pushes");
  const int fd = sender->fd_.get();
  // No UDP checksum: the tag covers every byte, and the kernel would otherwise checksum each
  // fragmented datagram in software.
  const int one = 1;
  (void)setsockopt(fd, SOL_SOCKET, SO_NO_CHECK, &one, sizeof one);
  in_addr local{};
  if (inet_pton(AF_INET, interface_address.c_str(), &local) != 1) {
    return Fail("page pushes: {} is not an IPv4 address", interface_address);
  }
  if (local.s_addr != htonl(INADDR_ANY) &&
      setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &local, sizeof local) != 0) {
    return FailErrno(fmt::format("page pushes through {}", interface_address));
  }
  const unsigned char ttl = sender->group_.ttl;
  const unsigned char loop = 1;  // clones on the server's own host get them too
  if (setsockopt(fd, IPPROTO_IP, IP_MULTICAST_TTL, &ttl, sizeof ttl) != 0 ||
      setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &loop, sizeof loop) != 0) {
    return FailErrno("page pushes: multicast options");
  }
  EnlargeBuffer(fd, SO_SNDBUFFORCE, SO_SNDBUF);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_addr = sender->group_.group;
  to.sin_port = htons(port);
  if (connect(fd, reinterpret_cast<const sockaddr*>(&to), sizeof to) != 0) {
    return FailErrno(fmt::format("page pushes to {}", sender->group_.ToString()));
  }
  return sender;
}

void PushSender::Push(uint64_t first_page, uint32_t count, uint64_t zero_mask,
                      const uint8_t* payload) {
  if (first_page >= pushed_at_ms_.size() || count > pushed_at_ms_.size() - first_page) return;
  const int64_t now_ns = clock_();
  const uint32_t now_ms = MsSinceStart(now_ns);
  const uint8_t* next = payload;
  for (uint32_t at = 0; at < count; at += kMaxPagesPerPush) {
    const uint32_t n = std::min(kMaxPagesPerPush, count - at);
    const uint32_t mask = static_cast<uint32_t>((zero_mask >> at) & ((1u << n) - 1));
    const uint32_t bytes = (n - static_cast<uint32_t>(std::popcount(mask))) * kPage;
    bool fresh = false;  // some page not pushed a moment ago
    for (uint32_t i = 0; i < n && !fresh; ++i) {
      const uint32_t last = pushed_at_ms_[first_page + at + i];
      fresh = last == 0 || now_ms - last >= repush_after_ms_;
    }
    if (fresh && !pacer_.Admit(sizeof(PushHeader) + bytes, now_ns)) {
      stats_.paced += n;  // whoever wants these pages fetches them
    } else if (fresh) {
      if (SendChunk(first_page + at, n, mask, next, bytes)) {
        for (uint32_t i = 0; i < n; ++i) pushed_at_ms_[first_page + at + i] = now_ms;
      } else if (pacer_.NoteOwnLoss(now_ns)) {
        ++stats_.rate_cuts;  // our own socket is full: slower
      }
    } else {
      stats_.suppressed += n;
    }
    next += bytes;
  }
}

void PushSender::NoteLosses(uint64_t receiver, uint32_t datagrams) {
  stats_.losses += datagrams;
  if (datagrams > 0 && pacer_.NoteLoss(receiver, clock_())) ++stats_.rate_cuts;
}

void PushSender::SetClockForTesting(std::function<int64_t()> clock) {
  clock_ = std::move(clock);
  start_ns_ = clock_();
  std::fill(pushed_at_ms_.begin(), pushed_at_ms_.end(), 0);
  pacer_ = PushPacer(start_ns_);
}

uint32_t PushSender::MsSinceStart(int64_t now_ns) const {
  return static_cast<uint32_t>(static_cast<uint64_t>(now_ns - start_ns_) / 1000000) + 1;
}

bool PushSender::PushedWithin(uint64_t first_page, uint32_t count, uint32_t window_ms) const {
  if (first_page >= pushed_at_ms_.size() || count > pushed_at_ms_.size() - first_page) {
    return false;
  }
  const uint32_t now_ms = MsSinceStart(clock_());
  for (uint64_t p = first_page; p < first_page + count; ++p) {
    const uint32_t last = pushed_at_ms_[p];
    if (last == 0 || now_ms - last >= window_ms) return false;
  }
  return true;
}

bool PushSender::SendChunk(uint64_t first_page, uint32_t count, uint32_t zero_mask,
                           const uint8_t* payload, uint32_t payload_bytes) {
  PushHeader header{};
  header.magic = kPushMagic;
  header.version = kPushVersion;
  header.count = static_cast<uint16_t>(count);
  header.session = group_.session;
  header.sequence = ++sequence_;
  header.first_page = first_page;
  header.zero_mask = zero_mask;
  header.payload_bytes = payload_bytes;
  const auto tag = tagger_->Tag(header, payload, payload_bytes);
  header.tag = tag;
  iovec parts[2] = {{&header, sizeof header}, {const_cast<uint8_t*>(payload), payload_bytes}};
  msghdr message{};
  message.msg_iov = parts;
  message.msg_iovlen = payload_bytes > 0 ? 2 : 1;
  if (sendmsg(fd_.get(), &message, MSG_DONTWAIT | MSG_NOSIGNAL) < 0) {
    ++stats_.dropped;  // full (EAGAIN, ENOBUFS) or no route: the clones fetch instead
    return false;
  }
  ++stats_.datagrams;
  stats_.pages += count;
  stats_.bytes += sizeof header + payload_bytes;
  return true;
}

Result<std::unique_ptr<PushReceiver>> PushReceiver::Join(const PushGroup& group,
                                                         const in_addr& local_address,
                                                         const PageKey& key, uint64_t page_count,
                                                         std::shared_ptr<PushLosses> losses) {
  auto receiver = std::unique_ptr<PushReceiver>(new PushReceiver());
  receiver->group_ = group;
  receiver->losses_ = std::move(losses);
  const auto push_key = DerivePushKey(key, group.session);
  if (!push_key) return Fail("page pushes: deriving the key");
  receiver->tagger_.emplace(*push_key);
  receiver->page_count_ = page_count;
  receiver->buffer_.resize(kMaxDatagram + 1);
  receiver->fd_.Reset(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!receiver->fd_.valid()) return FailErrno("a socket for page pushes");
  const int fd = receiver->fd_.get();
  const int one = 1;
  // Every clone on a host binds the group's port: each gets every datagram.
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0) {
    return FailErrno("page pushes: SO_REUSEADDR");
  }
  EnlargeBuffer(fd, SO_RCVBUFFORCE, SO_RCVBUF);
  sockaddr_in at{};
  at.sin_family = AF_INET;
  at.sin_addr = group.group;  // only this group's datagrams
  at.sin_port = htons(group.port);
  if (bind(fd, reinterpret_cast<const sockaddr*>(&at), sizeof at) != 0) {
    return FailErrno(fmt::format("binding {}", group.ToString()));
  }
  ip_mreqn join{};
  join.imr_multiaddr = group.group;
  join.imr_address = local_address;
  if (setsockopt(fd, IPPROTO_IP, IP_ADD_MEMBERSHIP, &join, sizeof join) != 0) {
    return FailErrno(fmt::format("joining {}", group.ToString()));
  }
  return receiver;
}

void PushReceiver::NoteDrops() {
  // The kernel's count of datagrams the socket dropped (its buffer was full), as it stands now
  // — not as it stood when the next datagram in the queue came (SO_RXQ_OVFL), which a full
  // buffer would delay by all it holds.
  uint32_t meminfo[SK_MEMINFO_VARS] = {};
  socklen_t length = sizeof meminfo;
  if (getsockopt(fd_.get(), SOL_SOCKET, SO_MEMINFO, meminfo, &length) != 0 ||
      length <= SK_MEMINFO_DROPS * sizeof(uint32_t)) {
    return;  // (unknown: no losses reported)
  }
  const uint32_t fresh = meminfo[SK_MEMINFO_DROPS] - static_cast<uint32_t>(lost_);  // (wraps)
  if (fresh == 0 || fresh > (1u << 31)) return;
  lost_ += fresh;
  if (losses_) losses_->dropped.fetch_add(fresh, std::memory_order_relaxed);
}

bool PushReceiver::TakeNext(const WantedPages& wanted, std::optional<PushedPages>* pushed) {
  pushed->reset();
  // The header first: a datagram of pages no longer wanted is dropped without copying it out.
  PushHeader header;
  const ssize_t n = recv(fd_.get(), &header, sizeof header, MSG_DONTWAIT | MSG_PEEK | MSG_TRUNC);
  if (n < 0) return false;  // none waiting (or an error: pushes are optional)
  // (Only with a datagram waiting: the socket drops only while its queue is full, so a loss
  // is still followed by datagrams to take.)
  NoteDrops();
  bytes_ += static_cast<uint64_t>(n);
  const auto drop = [this] {
    uint8_t byte;
    (void)recv(fd_.get(), &byte, 1, MSG_DONTWAIT | MSG_TRUNC);
  };
  if (static_cast<size_t>(n) < sizeof header || static_cast<size_t>(n) > kMaxDatagram) {
    ++rejected_;
    drop();
    return true;
  }
  const size_t payload = static_cast<size_t>(n) - sizeof header;
  const bool valid =
      header.magic == kPushMagic && header.version == kPushVersion &&
      header.session == group_.session && header.count >= 1 && header.count <= kMaxPagesPerPush &&
      (header.zero_mask >> header.count) == 0 && header.first_page < page_count_ &&
      header.count <= page_count_ - header.first_page && header.payload_bytes == payload &&
      payload == (header.count - static_cast<uint32_t>(std::popcount(header.zero_mask))) * kPage;
  if (!valid) {
    ++rejected_;
    drop();
    return true;
  }
  if (!wanted(header.first_page, header.count)) {
    drop();
    return true;
  }
  if (recv(fd_.get(), buffer_.data(), buffer_.size(), MSG_DONTWAIT) != n) {
    ++rejected_;  // (cannot be: the peeked datagram is the next one)
    return true;
  }
  const uint8_t* body = buffer_.data() + sizeof header;
  const auto tag = tagger_->Tag(header, body, payload);
  if (!memeql_sec(tag.data(), header.tag.data(), kPushTagBytes)) {
    ++rejected_;
    return true;
  }
  *pushed = PushedPages{header.first_page, header.count, header.zero_mask, body};
  return true;
}

}  // namespace flurry
