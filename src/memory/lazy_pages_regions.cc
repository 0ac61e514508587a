// LazyPages' huge regions (lazy_pages.h, "Huge regions"): a 2 MiB region wanted whole is put
// together in a buffer — from pushes, and from requests for the pages pushes did not bring —
// and moved into guest RAM as one huge page.
#include <sys/ioctl.h>

#include <algorithm>
#include <cstring>

#include "memory/lazy_pages.h"
#include "memory/uffd_compat.h"

namespace flurry {
namespace {

constexpr uint64_t kPage = 4096;
constexpr uint64_t kWindowPages = 64;   // the most one request asks for
constexpr uint64_t kRegionPages = 512;  // 2 MiB

}  // namespace

bool LazyPages::RegionWantedWholeLocked(uint64_t first) const {
  if (first % kRegionPages != 0 || first + kRegionPages > pages_ ||
      (host_base_ + first * kPage) % (kRegionPages * kPage) != 0 ||
      first * kPage < options_.huge_start || (first + kRegionPages) * kPage > options_.huge_end) {
    return false;
  }
  for (uint64_t p = first; p < first + kRegionPages; ++p) {
    if (!FetchOnTouch(State(p).load())) return false;
  }
  return true;
}

LazyPages::Assembly* LazyPages::AssemblyOf(uint64_t region) {
  for (Assembly& a : slots_) {
    if (a.region == region) return &a;
  }
  return nullptr;
}

const LazyPages::Assembly* LazyPages::AssemblyOf(uint64_t region) const {
  return const_cast<LazyPages*>(this)->AssemblyOf(region);
}

LazyPages::Assembly* LazyPages::NewAssemblyLocked(uint64_t region) {
  Assembly* chosen = nullptr;
  for (Assembly& a : slots_) {
    if (a.region == kNoPage) {
      chosen = &a;
      break;
    }
    // The one with the fewest pages (the least saved fetches are lost), the oldest of those.
    if (a.parts_in_flight == 0 &&
        (chosen == nullptr || a.have.count() < chosen->have.count() ||
         (a.have.count() == chosen->have.count() && a.serial < chosen->serial))) {
      chosen = &a;
    }
  }
  if (chosen == nullptr) return nullptr;
  if (!chosen->data) chosen->data = std::make_unique_for_overwrite<uint8_t[]>(kRegionPages * kPage);
  chosen->region = region;
  chosen->have.reset();
  chosen->pushed.reset();
  chosen->parts_in_flight = 0;
  chosen->serial = ++assembly_serial_;
  return chosen;
}

Result<void> LazyPages::RequestMissingLocked(Assembly& a, bool unless_pushed) {
  if (a.parts_in_flight > 0) return {};  // asked already for all it misses
  // Each run of missing pages (a window at most) in a request.
  for (uint64_t i = 0; i < kRegionPages;) {
    if (a.have[i]) {
      ++i;
      continue;
    }
    uint64_t end = i + 1;
    while (end < kRegionPages && end - i < kWindowPages && !a.have[end]) ++end;
    FLURRY_TRY(SendStreamLocked(a.region + i, end - i, a.region, unless_pushed));
    ++a.parts_in_flight;
    i = end;
  }
  stream_busy_.store(!in_flight_.empty(), std::memory_order_relaxed);
  if (a.parts_in_flight == 0) return InstallRegionLocked(a);
  return {};
}

Result<void> LazyPages::CollectPushedLocked(uint64_t p, const uint8_t* page) {
  const uint64_t region = p - p % kRegionPages;
  Assembly* a = AssemblyOf(region);
  if (a == nullptr) a = NewAssemblyLocked(region);
  if (a == nullptr) return {};  // every slot waits for replies: dropped
  const uint64_t i = p - region;
  if (a->have[i]) return {};
  std::memcpy(a->data.get() + i * kPage, page, kPage);
  a->have.set(i);
  a->pushed.set(i);
  // Whole: moved in now, unless replies for it are still to come (into this buffer).
  if (a->have.all() && a->parts_in_flight == 0) return InstallRegionLocked(*a);
  return {};
}

Result<void> LazyPages::PartReceivedLocked(Assembly& a, uint64_t first, uint64_t count) {
  for (uint64_t p = first; p < first + count; ++p) {
    a.have.set(p - a.region);
    a.pushed.reset(p - a.region);
  }
  if (--a.parts_in_flight > 0) return {};
  return InstallRegionLocked(a);
}

Result<bool> LazyPages::ResolveFromAssemblyLocked(uint64_t page) {
  Assembly* a = AssemblyOf(page - page % kRegionPages);
  // (A region with replies in flight was found in the stream.)
  if (a == nullptr || a->parts_in_flight > 0) return false;
  if (huge_ok_ && a->have.count() >= kRegionPages / 2 && RegionWantedWholeLocked(a->region)) {
    // Most of it is here: ask for the rest and take the replies up to the region's.
    const uint64_t region = a->region;
    FLURRY_TRY(RequestMissingLocked(*a, /*unless_pushed=*/false));
    if (!FLURRY_TRY(ResolveFromStreamLocked(page)) && FetchOnTouch(State(page).load())) {
      return Fail("the huge region at {:#x} was not installed", region * kPage);
    }
    return true;
  }
  FLURRY_TRY(InstallAssembledPagesLocked(*a));
  return !FetchOnTouch(State(page).load());
}

Result<void> LazyPages::InstallRegionLocked(Assembly& a) {
  uint64_t moved = 0;  // bytes
  if (huge_ok_ && a.have.all() && RegionWantedWholeLocked(a.region)) {
    // Written to the staging area (a fresh huge page there), then moved in whole.
    auto filled = options_.stage.fill(a.data.get());
    if (filled) {
      UffdioMove move{};
      move.dst = host_base_ + a.region * kPage;
      move.src = options_.stage.host_address;
      move.len = kRegionPages * kPage;
      move.mode = kUffdMoveModeDontWake;
      if (ioctl(uffd_.get(), kUffdioMove, &move) == 0) {
        moved = move.len;
      } else {
        moved = move.move > 0 ? static_cast<uint64_t>(move.move) : 0;
      }
    }
    if (moved != kRegionPages * kPage) huge_ok_ = false;  // from now on, 4 KiB installs only
  }
  if (moved != kRegionPages * kPage) {
    // Some pages changed meanwhile (freed, or written whole by the VMM), or the move failed
    // (pages it moved are there already, with the same data: the copy skips them).
    return InstallAssembledPagesLocked(a);
  }
  uint64_t wanted = 0;
  for (uint64_t p = a.region; p < a.region + kRegionPages; ++p) {
    wanted += State(p).load() == kFetch;
    State(p).store(kResident);
  }
  const uint64_t pushed = a.pushed.count();
  fetched_.fetch_add(kRegionPages - pushed, std::memory_order_relaxed);
  readahead_.fetch_add(kRegionPages - pushed, std::memory_order_relaxed);
  pushed_.fetch_add(pushed, std::memory_order_relaxed);
  pending_.fetch_sub(wanted, std::memory_order_relaxed);
  huge_.fetch_add(1, std::memory_order_relaxed);
  const uint64_t region = a.region;
  a.region = kNoPage;
  Wake(region, kRegionPages);
  return {};
}

Result<void> LazyPages::InstallAssembledPagesLocked(Assembly& a) {
  const uint64_t region = a.region;
  a.region = kNoPage;  // freed first: whatever happens below, no reply is due for it
  // Runs of pages it has, each brought the same way.
  for (uint64_t i = 0; i < kRegionPages;) {
    if (!a.have[i]) {
      ++i;
      continue;
    }
    uint64_t end = i + 1;
    while (end < kRegionPages && a.have[end] && a.pushed[end] == a.pushed[i]) ++end;
    FLURRY_TRY(InstallWantedLocked(region + i, end - i, a.data.get() + i * kPage, kNoPage,
                                   a.pushed[i] ? Brought::kByPush : Brought::kByReadahead));
    i = end;
  }
  return {};
}

}  // namespace flurry
