// PageSource: where the pages of a guest's memory image come from when they are fetched on
// demand (lazy_pages.h): a snapshot's memory file, or a page server across the network.
//
// Thread: one caller at a time (LazyPages serializes its calls).
#pragma once

#include <cstdint>
#include <string>

#include "base/error.h"

namespace flurry {

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
  // For messages: "page server 10.0.0.1:7000", "snapshot file DIR/memory.img".
  virtual std::string Describe() const = 0;
  // Bytes received from wherever the pages come from (payload and protocol; 0 for files).
  virtual uint64_t bytes_received() const { return 0; }
  // Pages the source said were all zero instead of sending them (network sources).
  virtual uint64_t zero_pages_elided() const { return 0; }
};

}  // namespace flurry
