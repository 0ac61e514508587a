// MemoryMap: the guest's user address space as the VMM manages it — the program image, the brk
// heap, anonymous mmap regions and the stack — all inside guest RAM (identity mapped).
//
// Plain data (part of GuestState). Layout, low to high:
//   [image_start, image_end)  ELF segments
//   [brk_start, brk)          heap, grows up to the lowest mmap region
//   ...                       free
//   [mmap regions]            allocated top-down below mmap_top
//   [mmap_top, stack_bottom)  2 MiB guard, not mapped in the page tables
//   [stack_bottom, ram_size)  the initial stack
//
// Every mapped page also has a protection (memory/protection_map.h): the image's as its
// segments say (the loader sets them), the heap and the stack read/write, mmap regions as
// mmap and mprotect set them. Unmapped pages fault.
#pragma once

#include <cstdint>
#include <map>
#include <optional>
#include <utility>
#include <vector>

#include "base/error.h"
#include "memory/protection_map.h"

namespace flurry {

class MemoryMap {
 public:
  MemoryMap() = default;
  MemoryMap(uint64_t image_start, uint64_t image_end, uint64_t mmap_top, uint64_t stack_bottom,
            uint64_t ram_size);

  uint64_t image_start() const { return image_start_; }
  uint64_t image_end() const { return image_end_; }
  uint64_t brk_start() const { return brk_start_; }
  uint64_t brk() const { return brk_; }
  uint64_t mmap_top() const { return mmap_top_; }
  uint64_t stack_bottom() const { return stack_bottom_; }
  uint64_t ram_size() const { return ram_size_; }
  const std::map<uint64_t, uint64_t>& regions() const { return regions_; }  // start -> length
  const ProtectionMap& protections() const { return protections_; }
  // The ranges whose protection changed since the last call (for Backend::Protect).
  std::vector<std::pair<uint64_t, uint64_t>> TakeProtectionChanges() {
    return protections_.TakeChanges();
  }

  // brk(2): moves the break if the new one fits below every mmap region; returns the break
  // in effect afterwards (Linux semantics: the old break on failure). When the break shrinks,
  // `released` receives the page-aligned range the VMM may discard.
  uint64_t SetBrk(uint64_t requested, uint64_t* released_start, uint64_t* released_len);

  // Finds room for `length` bytes (page multiple). With `fixed`, the range [hint, hint+len)
  // must lie inside the mmap area or the heap's free space and replaces what is there. The
  // pages get `prot` (PROT_*). Returns the address, or an error with ENOMEM/EINVAL.
  Result<uint64_t> Map(uint64_t hint, uint64_t length, bool fixed, uint8_t prot);
  // Removes [addr, addr+len) from the map (parts of regions allowed; unmapped parts ignored).
  // Returns the ranges that were mapped, which the VMM discards.
  std::vector<std::pair<uint64_t, uint64_t>> Unmap(uint64_t addr, uint64_t length);
  // mremap(2) without MREMAP_FIXED: grows or shrinks the region containing
  // [addr, addr+old_length) in place when possible, else (when may_move) reserves a new range
  // of new_length and returns its address; the caller then copies the data and Unmap()s the
  // old range. Grown or moved pages keep the protection of the range's last page.
  Result<uint64_t> Remap(uint64_t addr, uint64_t old_length, uint64_t new_length, bool may_move);
  // True if [addr, addr+len) is entirely inside mapped memory (image, heap, regions, stack).
  bool IsMapped(uint64_t addr, uint64_t length) const {
    return length == 0 || protections_.Covers(addr, length);
  }
  // True if any page of [addr, addr+len) is mapped.
  bool Overlaps(uint64_t addr, uint64_t length) const {
    return protections_.Overlaps(addr, length);
  }
  // mprotect(2): gives mapped pages [addr, addr+len) (page aligned) `prot`. ENOMEM if any of
  // them is not mapped, after changing those before the first hole (as Linux does).
  Result<void> Protect(uint64_t addr, uint64_t length, uint8_t prot);

  uint64_t MappedBytes() const;

  // Restoring a captured map: the break, the regions and the protections (the constructor set
  // the rest). Without protections (a descriptor from before they were kept) every mapped page
  // is readable, writable and executable, as guests then ran.
  void RestoreDynamicState(uint64_t brk, std::map<uint64_t, uint64_t> regions,
                           std::optional<std::map<uint64_t, ProtectionMap::Span>> protections);

 private:
  // The start of the lowest mmap region (mmap_top when there is none): the heap's ceiling.
  uint64_t LowestRegion() const;
  // True if no region overlaps [addr, addr+length).
  bool RangeFree(uint64_t addr, uint64_t length) const;

  uint64_t image_start_ = 0;
  uint64_t image_end_ = 0;
  uint64_t brk_start_ = 0;
  uint64_t brk_ = 0;
  uint64_t mmap_top_ = 0;
  uint64_t stack_bottom_ = 0;
  uint64_t ram_size_ = 0;
  std::map<uint64_t, uint64_t> regions_;
  ProtectionMap protections_;
};

}  // namespace flurry
