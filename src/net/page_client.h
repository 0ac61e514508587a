// PageClient: the restoring side of the page protocol (docs/protocols/page_server.md) — one
// TCP connection to a page server, used as the PageSource of memory on demand.
//
// Thread: one caller at a time (LazyPages serializes fetches). Every call ends within the
// connection timeout: a server that stops answering is an error (ETIMEDOUT), never a hang.
#pragma once

#include <chrono>
#include <deque>
#include <memory>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "memory/page_source.h"
#include "net/page_protocol.h"
#include "net/page_push.h"

namespace flurry {

class PageClient : public PageSource {
 public:
  static constexpr std::chrono::milliseconds kDefaultTimeout{3000};
  // Connects and says hello with the server's key (a wrong key: EACCES).
  static Result<std::unique_ptr<PageClient>> Connect(
      const PageServerAddress& server, std::chrono::milliseconds timeout = kDefaultTimeout);

  // The encoded descriptor of the served VM (decode with DecodeDescriptor).
  Result<std::vector<uint8_t>> FetchDescriptor();
  Result<void> Fetch(uint64_t first_page, uint32_t count, uint8_t* out) override;
  // Pipelined page requests on the same connection (the server answers in order); a broken
  // connection is opened again once and the outstanding requests asked again.
  Result<void> Send(uint64_t first_page, uint32_t count) override;
  Result<void> Receive(uint64_t first_page, uint32_t count, uint8_t* out) override;
  // kPagesUnlessPushed (page protocol 5): the server may answer "pushed".
  Result<void> SendUnlessPushed(uint64_t first_page, uint32_t count) override;
  Result<bool> ReceiveOrPushed(uint64_t first_page, uint32_t count, uint8_t* out) override;
  // Joins the multicast group the server pushes its page replies to (net/page_push.h), on this
  // connection's interface: null when the server pushes none. `page_count`: the image's size.
  Result<std::unique_ptr<PagePushes>> JoinPushes(uint64_t page_count) override;
  // The encoded file tree of the served VM's --dir (decode with DecodeFileTree); ENOENT when
  // the VM has none.
  Result<std::vector<uint8_t>> FetchFileTree();
  // Up to `max` bytes (a reply holds at most kMaxFileReadBytes) of file tree entry `index` from
  // `offset`; 0 at the end of the file.
  Result<uint32_t> ReadFile(uint32_t index, uint64_t offset, uint8_t* out, uint32_t max);
  std::string Describe() const override { return "page server " + server_.server.ToString(); }
  uint64_t bytes_received() const override { return bytes_received_; }
  // Pages the server answered as all zero instead of sending them.
  uint64_t zero_pages_elided() const override { return zero_pages_elided_; }

 private:
  PageClient(UniqueFd fd, PageServerAddress server, std::chrono::milliseconds timeout)
      : fd_(std::move(fd)), server_(std::move(server)), timeout_(timeout) {}
  // A new connection to the server, past its hello.
  static Result<UniqueFd> Open(const PageServerAddress& server, std::chrono::milliseconds timeout);
  // One request and its reply; the payload (at most `max_payload` bytes) goes to `out`.
  Result<uint32_t> Exchange(PageOp op, uint64_t first_page, uint32_t count, uint8_t* out,
                            uint32_t max_payload);
  Result<uint32_t> ExchangeOnce(const PageRequest& request, uint8_t* out, uint32_t max_payload);
  // The reply to `request` (already sent), checked.
  Result<uint32_t> ReadReply(const PageRequest& request, uint8_t* out, uint32_t max_payload);
  // A new connection for a broken one; the outstanding requests are sent again on it.
  Result<void> Reconnect();
  Result<void> SendPages(PageOp op, uint64_t first_page, uint32_t count);
  // The pushes lost since the last page request (PageRequest::push_losses), now reported.
  uint32_t LossesToReport();

  UniqueFd fd_;
  PageServerAddress server_;
  std::chrono::milliseconds timeout_;
  uint64_t bytes_received_ = 0;
  uint64_t zero_pages_elided_ = 0;
  bool refused_ = false;  // the last reply read was a refusal (a status): the connection is fine
  bool pushed_ = false;   // the last reply read was "pushed" (kPagesUnlessPushed)
  std::deque<PageRequest> outstanding_;      // sent, reply not yet read (Send/Receive)
  std::shared_ptr<PushLosses> push_losses_;  // counted by the receiver of JoinPushes
  uint64_t losses_reported_ = 0;
};

}  // namespace flurry
