// PageSource: where the pages of a guest's memory image come from when they are fetched on
// demand (lazy_pages.h): a snapshot's memory file, or a page server across the network.
//
// Thread: one caller at a time (LazyPages serializes its calls).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "base/error.h"

namespace flurry {

// Pages of the image that arrive without being asked for: another clone of the same VM asked,
// and the server pushed its reply to every clone (net/page_push.h). Optional: a page that is
// never pushed is fetched from the PageSource as usual.
struct PushedPages {
  uint64_t first_page = 0;
  uint32_t count = 0;                // at most 64
  uint64_t zero_mask = 0;            // bit i: page first_page+i is all zero, absent from payload
  const uint8_t* payload = nullptr;  // the other pages, in order; valid until the next take
};

// Thread: one caller at a time (LazyPages' handler thread).
class PagePushes {
 public:
  // Whether any page of [first_page, first_page+count) is still wanted (asked before a
  // datagram's authentication is checked: most pushes of pages already installed are dropped
  // without that cost).
  using WantedPages = std::function<bool(uint64_t first_page, uint32_t count)>;
  virtual ~PagePushes() = default;
  // Readable when a push may be waiting.
  virtual int fd() const = 0;
  // Takes the next push waiting: false when none is. `pushed` gets its pages when it is
  // genuine and holds wanted pages; otherwise it is dropped (and counted if it was malformed,
  // forged or another server's).
  virtual bool TakeNext(const WantedPages& wanted, std::optional<PushedPages>* pushed) = 0;
  virtual uint64_t bytes_received() const = 0;
  virtual uint64_t rejected() const = 0;
  // Pushes that arrived but found no room (dropped before they could be taken), as far as
  // the receiver knows.
  virtual uint64_t lost() const { return 0; }
  virtual std::string Describe() const = 0;
};

class PageSource {
 public:
  virtual ~PageSource() = default;
  // Fills `out` with `count` 4 KiB pages of the image starting at guest page `first_page`, as
  // they were when the image was taken.
  virtual Result<void> Fetch(uint64_t first_page, uint32_t count, uint8_t* out) = 0;
  // Pipelined fetches (LazyPages' readahead): Send asks for `count` (at most 64) pages from
  // `first_page` without waiting; Receive takes the reply to the oldest request still asked
  // for, which must be the one named. Fetch is not called while requests are outstanding. A
  // source that cannot pipeline (the default) fetches in Receive.
  virtual Result<void> Send(uint64_t /*first_page*/, uint32_t /*count*/) { return {}; }
  virtual Result<void> Receive(uint64_t first_page, uint32_t count, uint8_t* out) {
    return Fetch(first_page, count, out);
  }
  // As Send, but a source that pushes (below) may answer "pushed" instead of the pages: they
  // went to every clone a moment ago. ReceiveOrPushed then returns false (`out` untouched);
  // whoever asked takes them from its pushes, or asks again with Send.
  virtual Result<void> SendUnlessPushed(uint64_t first_page, uint32_t count) {
    return Send(first_page, count);
  }
  virtual Result<bool> ReceiveOrPushed(uint64_t first_page, uint32_t count, uint8_t* out) {
    FLURRY_TRY(Receive(first_page, count, out));
    return true;
  }
  // For messages: "page server 10.0.0.1:7000", "snapshot file DIR/memory.img".
  virtual std::string Describe() const = 0;
  // Bytes received from wherever the pages come from (payload and protocol; 0 for files).
  virtual uint64_t bytes_received() const { return 0; }
  // Pages the source said were all zero instead of sending them (network sources).
  virtual uint64_t zero_pages_elided() const { return 0; }
  // Pages pushed by the source without being asked for (below), where it pushes any: null
  // otherwise. `page_count`: the image's size in pages.
  virtual Result<std::unique_ptr<PagePushes>> JoinPushes(uint64_t /*page_count*/) {
    return std::unique_ptr<PagePushes>();
  }
};

}  // namespace flurry
