#include "net/page_client.h"

#include <netinet/in.h>
#include <sys/socket.h>

#include <algorithm>
#include <bit>
#include <cstring>

#include "net/page_push.h"
#include "net/tcp.h"

namespace flurry {
namespace {

// A failed exchange worth one new connection: the connection broke or timed out (not a reply
// that broke the protocol or its checksum: the server would send that again).
bool ConnectionBroke(const Error& error) {
  return error.code() != EPROTO && error.code() != EBADMSG;
}

}  // namespace

Result<UniqueFd> PageClient::Open(const PageServerAddress& server,
                                  std::chrono::milliseconds timeout) {
  UniqueFd fd = FLURRY_TRY(ConnectTcp(server.server, timeout));
  PageRequest hello{
      kPageProtocolMagic, kPageProtocolVersion, static_cast<uint16_t>(PageOp::kHello), 0, 0, 0};
  // One write: the server reads a hello only once all of it is there.
  uint8_t message[sizeof hello + kPageKeyBytes];
  std::memcpy(message, &hello, sizeof hello);
  const auto proof = server.key.HelloProof();
  if (!proof) return Fail("computing the page server hello");
  std::memcpy(message + sizeof hello, proof->data(), kPageKeyBytes);
  FLURRY_TRY(WriteFull(fd.get(), message, sizeof message));
  PageReplyHeader header{};
  FLURRY_TRY(ReadFull(fd.get(), &header, sizeof header));
  if (header.magic != kPageProtocolMagic || header.version != kPageProtocolVersion) {
    return FailErrno(EPROTO, fmt::format("{} does not speak the page protocol (version {})",
                                         server.server.ToString(), kPageProtocolVersion));
  }
  if (header.status != 0) {
    return FailErrno(header.status, fmt::format("{} refused the key", server.server.ToString()));
  }
  if (header.payload_bytes != 0) return FailErrno(EPROTO, "a hello reply with a payload");
  return fd;
}

Result<std::unique_ptr<PageClient>> PageClient::Connect(const PageServerAddress& server,
                                                        std::chrono::milliseconds timeout) {
  UniqueFd fd = FLURRY_TRY(Open(server, timeout));
  return std::unique_ptr<PageClient>(new PageClient(std::move(fd), server, timeout));
}

Result<uint32_t> PageClient::ExchangeOnce(const PageRequest& request, uint8_t* out,
                                          uint32_t max_payload) {
  FLURRY_TRY(WriteFull(fd_.get(), &request, sizeof request));
  return ReadReply(request, out, max_payload);
}

Result<uint32_t> PageClient::ReadReply(const PageRequest& request, uint8_t* out,
                                       uint32_t max_payload) {
  PageReplyHeader header{};
  FLURRY_TRY(ReadFull(fd_.get(), &header, sizeof header));
  bytes_received_ += sizeof header;
  if (header.magic != kPageProtocolMagic || header.version != kPageProtocolVersion) {
    return FailErrno(EPROTO, fmt::format("a reply that is not the page protocol's (version {})",
                                         kPageProtocolVersion));
  }
  if (header.status != 0) {
    refused_ = true;
    return FailErrno(header.status, "the page server refused");
  }
  if (header.payload_bytes > max_payload) {
    return FailErrno(EPROTO, fmt::format("a {}-byte reply where at most {} fit",
                                         header.payload_bytes, max_payload));
  }
  const bool unless_pushed = request.op == static_cast<uint16_t>(PageOp::kPagesUnlessPushed);
  const bool pages = request.op == static_cast<uint16_t>(PageOp::kPages) || unless_pushed;
  pushed_ = false;
  if (unless_pushed && header.count == 0 && header.first_page == request.first_page &&
      header.payload_bytes == 0 && header.zero_mask == 0) {
    pushed_ = true;  // the pages went to the push group
    return 0;
  }
  const uint64_t all = request.count >= 64 ? ~0ULL : (1ULL << request.count) - 1;
  if (pages &&
      (header.first_page != request.first_page || header.count != request.count ||
       (header.zero_mask & ~all) != 0 ||
       header.payload_bytes != (request.count - std::popcount(header.zero_mask)) * 4096u)) {
    return FailErrno(EPROTO, "a reply for other pages than asked for");
  }
  if (!pages && header.zero_mask != 0) return FailErrno(EPROTO, "a zero mask on a non-page reply");
  FLURRY_TRY(ReadFull(fd_.get(), out, header.payload_bytes));
  bytes_received_ += header.payload_bytes;
  if (PayloadChecksum(out, header.payload_bytes) != header.checksum) {
    return FailErrno(EBADMSG, "a reply whose checksum does not match");
  }
  if (pages && header.zero_mask != 0) {
    // Spread the pages sent to their places, from the last one down, zeroing the others.
    uint64_t sent = header.payload_bytes / 4096;
    for (uint32_t i = request.count; i-- > 0;) {
      uint8_t* page = out + uint64_t{i} * 4096;
      if (header.zero_mask & (1ULL << i)) {
        std::memset(page, 0, 4096);
        ++zero_pages_elided_;
      } else if (--sent != i) {
        std::memmove(page, out + sent * 4096, 4096);
      }
    }
  }
  return pages ? request.count * 4096u : header.payload_bytes;
}

Result<uint32_t> PageClient::Exchange(PageOp op, uint64_t first_page, uint32_t count, uint8_t* out,
                                      uint32_t max_payload) {
  PageRequest request{kPageProtocolMagic,
                      kPageProtocolVersion,
                      static_cast<uint16_t>(op),
                      first_page,
                      count,
                      op == PageOp::kPages ? LossesToReport() : 0};
  refused_ = false;
  auto got = ExchangeOnce(request, out, max_payload);
  // (A refusal came over a working connection: asking again elsewhere changes nothing.)
  if (got || refused_ || !ConnectionBroke(got.error())) return got;
  // The connection broke (or timed out): one new connection, one more try.
  auto fd = Open(server_, timeout_);
  if (!fd) return std::unexpected(got.error());
  fd_ = std::move(*fd);
  request.push_losses = 0;  // (the server may have counted them already)
  return ExchangeOnce(request, out, max_payload);
}

Result<std::vector<uint8_t>> PageClient::FetchDescriptor() {
  // Room for the largest descriptor, left uninitialized: zeroing 16 MiB first cost a clone
  // ~40 ms of page faults on the PVM host; only the bytes received are touched.
  std::unique_ptr<uint8_t[]> buffer(new uint8_t[kMaxDescriptorReplyBytes]);
  const uint32_t n =
      FLURRY_TRY_CTX(Exchange(PageOp::kDescriptor, 0, 0, buffer.get(), kMaxDescriptorReplyBytes),
                     fmt::format("fetching the descriptor from {}", Describe()));
  return std::vector<uint8_t>(buffer.get(), buffer.get() + n);
}

Result<std::unique_ptr<PagePushes>> PageClient::JoinPushes(uint64_t page_count) {
  PushGroupWire wire{};
  auto got = Exchange(PageOp::kPushGroup, 0, 0, reinterpret_cast<uint8_t*>(&wire), sizeof wire);
  if (!got && got.error().code() == ENOENT) return std::unique_ptr<PagePushes>();
  if (!got) return std::unexpected(got.error().WithContext("asking for the push group"));
  const PushGroup group = FLURRY_TRY_CTX(
      DecodePushGroup(reinterpret_cast<const uint8_t*>(&wire), *got), "the server's push group");
  // Joined where this connection goes out: the interface toward the server.
  sockaddr_in local{};
  socklen_t length = sizeof local;
  if (getsockname(fd_.get(), reinterpret_cast<sockaddr*>(&local), &length) != 0) {
    return FailErrno("getsockname of the page server connection");
  }
  auto losses = std::make_shared<PushLosses>();
  auto receiver =
      FLURRY_TRY_CTX(PushReceiver::Join(group, local.sin_addr, server_.key, page_count, losses),
                     fmt::format("joining the page pushes of {}", Describe()));
  push_losses_ = std::move(losses);
  losses_reported_ = 0;
  return receiver;
}

Result<std::vector<uint8_t>> PageClient::FetchFileTree() {
  std::unique_ptr<uint8_t[]> buffer(new uint8_t[kMaxFileTreeReplyBytes]);
  const uint32_t n =
      FLURRY_TRY_CTX(Exchange(PageOp::kFileTree, 0, 0, buffer.get(), kMaxFileTreeReplyBytes),
                     fmt::format("fetching the file tree from {}", Describe()));
  return std::vector<uint8_t>(buffer.get(), buffer.get() + n);
}

Result<uint32_t> PageClient::ReadFile(uint32_t index, uint64_t offset, uint8_t* out, uint32_t max) {
  if (max >= kMaxFileReadBytes) return Exchange(PageOp::kFileRead, offset, index, out, max);
  // The server sends up to kMaxFileReadBytes: take them in a buffer of that size.
  std::vector<uint8_t> chunk(kMaxFileReadBytes);
  const uint32_t n =
      FLURRY_TRY(Exchange(PageOp::kFileRead, offset, index, chunk.data(), kMaxFileReadBytes));
  const uint32_t kept = std::min(n, max);
  std::memcpy(out, chunk.data(), kept);
  return kept;
}

Result<void> PageClient::Fetch(uint64_t first_page, uint32_t count, uint8_t* out) {
  if (!outstanding_.empty()) {
    return FailErrno(EBUSY, fmt::format("a page fetch while {} pipelined requests are outstanding",
                                        outstanding_.size()));
  }
  while (count > 0) {
    const uint32_t n = std::min(count, kMaxPagesPerRequest);
    FLURRY_TRY(Exchange(PageOp::kPages, first_page, n, out, n * 4096));
    first_page += n;
    count -= n;
    out += uint64_t{n} * 4096;
  }
  return {};
}

uint32_t PageClient::LossesToReport() {
  if (!push_losses_) return 0;
  const uint64_t dropped = push_losses_->dropped.load(std::memory_order_relaxed);
  const uint64_t fresh = std::min<uint64_t>(dropped - losses_reported_, UINT32_MAX);
  losses_reported_ += fresh;
  return static_cast<uint32_t>(fresh);
}

Result<void> PageClient::Reconnect() {
  fd_ = FLURRY_TRY(Open(server_, timeout_));
  for (PageRequest& request : outstanding_) {
    request.push_losses = 0;  // (the server may have counted them already)
    FLURRY_TRY(WriteFull(fd_.get(), &request, sizeof request));
  }
  return {};
}

Result<void> PageClient::Send(uint64_t first_page, uint32_t count) {
  return SendPages(PageOp::kPages, first_page, count);
}

Result<void> PageClient::SendUnlessPushed(uint64_t first_page, uint32_t count) {
  return SendPages(PageOp::kPagesUnlessPushed, first_page, count);
}

Result<void> PageClient::SendPages(PageOp op, uint64_t first_page, uint32_t count) {
  if (count == 0 || count > kMaxPagesPerRequest) {
    return FailErrno(EINVAL, fmt::format("a pipelined request for {} pages", count));
  }
  outstanding_.push_back(PageRequest{kPageProtocolMagic, kPageProtocolVersion,
                                     static_cast<uint16_t>(op), first_page, count,
                                     LossesToReport()});
  if (WriteFull(fd_.get(), &outstanding_.back(), sizeof(PageRequest))) return {};
  return Reconnect();  // sends this request too
}

Result<void> PageClient::Receive(uint64_t first_page, uint32_t count, uint8_t* out) {
  const bool data = FLURRY_TRY(ReceiveOrPushed(first_page, count, out));
  if (!data) return FailErrno(EPROTO, "a \"pushed\" reply to a request for the pages");
  return {};
}

Result<bool> PageClient::ReceiveOrPushed(uint64_t first_page, uint32_t count, uint8_t* out) {
  if (outstanding_.empty() || outstanding_.front().first_page != first_page ||
      outstanding_.front().count != count) {
    return FailErrno(
        EINVAL, fmt::format("receiving pages {:#x}+{} that were not the next asked for", first_page,
                            count));
  }
  const PageRequest request = outstanding_.front();
  auto got = ReadReply(request, out, count * 4096);
  if (!got && ConnectionBroke(got.error())) {
    // The connection broke (or timed out): one new connection, every request asked again.
    if (Reconnect()) got = ReadReply(request, out, count * 4096);
  }
  outstanding_.pop_front();
  if (!got) return std::unexpected(got.error());
  return !pushed_;
}

}  // namespace flurry
