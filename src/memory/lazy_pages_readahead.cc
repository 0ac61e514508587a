// LazyPages' readahead stream (lazy_pages.h): the wanted pages ahead of a sequential scan,
// asked for in pipelined requests and installed while the guest works on the pages before them.
#include <algorithm>
#include <chrono>
#include <cstring>

#include "memory/lazy_pages.h"
#include "memory/uffd_compat.h"

namespace flurry {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kWindowPages = 64;   // the most one request asks for
constexpr size_t kStreamDepth = 4;      // requests in flight at most (a huge region: its 8)
constexpr uint64_t kRegionPages = 512;  // 2 MiB
// Pushes taken after a "pushed" reply at most, until the request's pages are there (a fault
// may be waiting meanwhile): a request's 64 pages are 5 datagrams, and other clones' pushes
// come between them.
constexpr int kMaxPushesPerPushedReply = 512;
// "Pushed" replies in a row that brought nothing, after which the stream asks for the pages in
// its next kPlainAfterFruitless requests.
constexpr uint32_t kMaxFruitlessPushedReplies = 8;
constexpr uint32_t kPlainAfterFruitless = 64;

uint64_t ElapsedNs(std::chrono::steady_clock::time_point start) {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start)
          .count());
}

}  // namespace

bool LazyPages::MarkerSetLocked() const {
  return marker_page_ != kNoPage && FetchOnTouch(State(marker_page_).load());
}

Result<uint64_t> LazyPages::InstallWantedLocked(uint64_t first, uint64_t count, const uint8_t* data,
                                                uint64_t skip, Brought by) {
  uint64_t installed = 0;
  uint64_t wanted = 0;  // pages of the image's page map among them
  for (uint64_t p = first; p < first + count;) {
    if (p == skip || !FetchOnTouch(State(p).load())) {
      ++p;
      continue;
    }
    uint64_t end = p + 1;
    while (end < first + count && end != skip && FetchOnTouch(State(end).load())) ++end;
    FLURRY_TRY(CopyLocked(p, end - p, data + (p - first) * kPage));
    for (uint64_t q = p; q < end; ++q) {
      wanted += State(q).load() == kFetch;
      State(q).store(kResident);
    }
    installed += end - p;
    p = end;
  }
  (by == Brought::kByPush ? pushed_ : fetched_).fetch_add(installed, std::memory_order_relaxed);
  if (by == Brought::kByFault && installed > 1) {
    prefetched_.fetch_add(installed - 1, std::memory_order_relaxed);
  }
  if (by == Brought::kByReadahead) readahead_.fetch_add(installed, std::memory_order_relaxed);
  pending_.fetch_sub(wanted, std::memory_order_relaxed);
  Wake(first, count);
  return installed;
}

Result<void> LazyPages::StartStreamLocked(uint64_t page, uint64_t end) {
  // Nothing is in flight here (the fetch that led here drained the stream): the stream runs
  // from the end of that fetch, in the range of the scan.
  stream_on_ = true;
  stream_next_ = end;
  stream_guest_ = page;
  stream_end_ = RangeEnd(page);
  return SendMoreLocked();
}

bool LazyPages::HugeRegionAt(uint64_t first) const {
  return huge_ok_ && first % kRegionPages == 0 && first + kRegionPages <= stream_end_ &&
         RegionWantedWholeLocked(first);
}

Result<void> LazyPages::SendMoreLocked() {
  while (stream_on_ && in_flight_.size() < kStreamDepth) {
    const uint64_t limit = std::min(stream_end_, stream_guest_ + options_.readahead_pages);
    uint64_t first = stream_next_;
    while (first < limit && !FetchOnTouch(State(first).load())) ++first;
    stream_next_ = first;
    if (first >= limit) {
      // Far enough ahead of the guest (the stream goes on when the guest comes closer), or at
      // the end of the range (the stream ends).
      if (first >= stream_end_) stream_on_ = false;
      break;
    }
    if (HugeRegionAt(first)) {
      // A whole region, wanted: the pages pushes have not brought (its 8 windows at most), to
      // be moved in as one huge page.
      Assembly* a = AssemblyOf(first);
      if (a == nullptr) a = NewAssemblyLocked(first);
      if (a != nullptr) {
        stream_next_ = first + kRegionPages;
        FLURRY_TRY(RequestMissingLocked(*a, /*unless_pushed=*/true));
        continue;
      }
    }
    // (Windows stop at a region's start, where huge regions can begin.)
    uint64_t end_limit = std::min(stream_end_, first + kWindowPages);
    if (huge_ok_) end_limit = std::min(end_limit, (first / kRegionPages + 1) * kRegionPages);
    uint64_t end = first + 1;
    while (end < end_limit && FetchOnTouch(State(end).load())) ++end;
    FLURRY_TRY(SendStreamLocked(first, end - first, kNoPage));
    stream_next_ = end;
  }
  stream_busy_.store(!in_flight_.empty(), std::memory_order_relaxed);
  return {};
}

Result<void> LazyPages::ReceiveOneLocked() {
  if (in_flight_.empty()) return {};
  const StreamRequest request = in_flight_.front();
  in_flight_.pop_front();
  stream_busy_.store(!in_flight_.empty(), std::memory_order_relaxed);
  const auto start = std::chrono::steady_clock::now();
  Assembly* part = request.region != kNoPage ? AssemblyOf(request.region) : nullptr;
  if (request.region != kNoPage && part == nullptr) {
    return Fail("no buffer for the huge region at page {:#x}", request.region * kPage);
  }
  uint8_t* out = part != nullptr ? part->data.get() + (request.first - request.region) * kPage
                                 : stream_buffer_.get();
  // (A request asked for with Send is answered with the pages.)
  const bool data = FLURRY_TRY_CTX(
      source_->ReceiveOrPushed(request.first, static_cast<uint32_t>(request.count), out),
      fmt::format("fetching page {:#x} from {}", request.first * kPage, source_->Describe()));
  fetch_ns_.fetch_add(ElapsedNs(start), std::memory_order_relaxed);
  requests_.fetch_add(1, std::memory_order_relaxed);
  if (!data) return TakeFromPushesLocked(request);
  if (part != nullptr) return PartReceivedLocked(*part, request.first, request.count);
  // A window received well ahead of the guest keeps its first page back as the marker.
  uint64_t skip = kNoPage;
  if (!MarkerSetLocked() && request.first >= stream_guest_ + options_.readahead_pages / 2 &&
      FetchOnTouch(State(request.first).load())) {
    skip = marker_page_ = request.first;
    std::memcpy(marker_data_.data(), stream_buffer_.get(), kPage);
  }
  FLURRY_TRY(InstallWantedLocked(request.first, request.count, stream_buffer_.get(), skip,
                                 Brought::kByReadahead));
  return {};
}

Result<void> LazyPages::DrainLocked() {
  while (!in_flight_.empty()) FLURRY_TRY(ReceiveOneLocked());
  return {};
}

Result<bool> LazyPages::ResolveFromStreamLocked(uint64_t page) {
  if (page == marker_page_ && MarkerSetLocked()) {
    // The guest reached the marker: install it from the stash, and run further ahead.
    marker_page_ = kNoPage;
    FLURRY_TRY(InstallWantedLocked(page, 1, marker_data_.data(), kNoPage, Brought::kByReadahead));
    stream_guest_ = std::max(stream_guest_, page);
    FLURRY_TRY(SendMoreLocked());
    return true;
  }
  // In flight: in a request, or in a huge region with parts in flight (its parts received so
  // far wait in its buffer until the last one comes). The guest caught up with the stream:
  // take the replies up to the page's (to its region's last part, for a huge region's part),
  // again while the page was asked for again (a "pushed" reply whose pushes did not bring it).
  bool took = false;
  while (FetchOnTouch(State(page).load())) {
    const auto hit =
        std::find_if(in_flight_.begin(), in_flight_.end(), [&](const StreamRequest& r) {
          return (page >= r.first && page < r.first + r.count) ||
                 (r.region != kNoPage && page >= r.region && page < r.region + kRegionPages);
        });
    if (hit == in_flight_.end()) break;
    auto last = hit;
    if (hit->region != kNoPage) {
      for (auto it = hit; it != in_flight_.end(); ++it) {
        if (it->region == hit->region) last = it;
      }
    }
    stream_guest_ = std::max(stream_guest_, page);
    for (auto n = last - in_flight_.begin() + 1; n > 0; --n) FLURRY_TRY(ReceiveOneLocked());
    took = true;
  }
  if (!took) return false;
  FLURRY_TRY(SendMoreLocked());
  return !FetchOnTouch(State(page).load());
}

Result<void> LazyPages::SendStreamLocked(uint64_t first, uint64_t count, uint64_t region,
                                         bool allow_pushed) {
  bool unless_pushed = allow_pushed && options_.pushes != nullptr && !pushes_off_;
  if (unless_pushed && plain_requests_left_ > 0) {
    --plain_requests_left_;
    unless_pushed = false;
  }
  const auto n = static_cast<uint32_t>(count);
  FLURRY_TRY_CTX(unless_pushed ? source_->SendUnlessPushed(first, n) : source_->Send(first, n),
                 fmt::format("asking {} for page {:#x}", source_->Describe(), first * kPage));
  in_flight_.push_back({first, count, region, unless_pushed});
  stream_busy_.store(true, std::memory_order_relaxed);
  return {};
}

Result<void> LazyPages::TakeFromPushesLocked(const StreamRequest& request) {
  push_replies_.fetch_add(1, std::memory_order_relaxed);
  Assembly* part = request.region != kNoPage ? AssemblyOf(request.region) : nullptr;
  const auto needed = [&](uint64_t p) {
    if (part != nullptr) return !part->have[p - request.region];
    return FetchOnTouch(State(p).load()) && !(p == marker_page_ && MarkerSetLocked());
  };
  const auto missing = [&] {
    uint64_t n = 0;
    for (uint64_t p = request.first; p < request.first + request.count; ++p) n += needed(p);
    return n;
  };
  // The pushes were sent before this reply: they are here (among others' pushes), or lost.
  for (int taken = 0; taken < kMaxPushesPerPushedReply && missing() > 0;) {
    const int now = TakePushesLocked(16);
    if (now == 0) break;  // none waiting
    taken += now;
  }
  if (missing() < request.count) {
    fruitless_pushed_replies_ = 0;
  } else if (++fruitless_pushed_replies_ >= kMaxFruitlessPushedReplies) {
    plain_requests_left_ = kPlainAfterFruitless;  // the group seems not to reach this host
    fruitless_pushed_replies_ = 0;
  }
  for (uint64_t p = request.first; p < request.first + request.count;) {
    if (!needed(p)) {
      ++p;
      continue;
    }
    uint64_t end = p + 1;
    while (end < request.first + request.count && needed(end)) ++end;
    FLURRY_TRY_CTX(source_->Send(p, static_cast<uint32_t>(end - p)),
                   fmt::format("asking {} for page {:#x}", source_->Describe(), p * kPage));
    in_flight_.push_back({p, end - p, request.region, false});
    if (part != nullptr) ++part->parts_in_flight;
    p = end;
  }
  stream_busy_.store(!in_flight_.empty(), std::memory_order_relaxed);
  if (part != nullptr && --part->parts_in_flight == 0) return InstallRegionLocked(*part);
  return {};
}

}  // namespace flurry
