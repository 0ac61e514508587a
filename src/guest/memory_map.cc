#include "guest/memory_map.h"

#include <cerrno>

#include "arch/x86_64/layout.h"

namespace flurry {

using x86::AlignUp;
using x86::kPageSize;

MemoryMap::MemoryMap(uint64_t image_start, uint64_t image_end, uint64_t mmap_top,
                     uint64_t stack_bottom, uint64_t ram_size)
    : image_start_(image_start),
      image_end_(AlignUp(image_end, kPageSize)),
      brk_start_(AlignUp(image_end, kPageSize)),
      brk_(AlignUp(image_end, kPageSize)),
      mmap_top_(mmap_top),
      stack_bottom_(stack_bottom),
      ram_size_(ram_size) {
  // The loader refines the image's protections segment by segment.
  protections_.Set(image_start_, image_end_ - image_start_, kProtReadWrite);
  protections_.Set(stack_bottom_, ram_size_ - stack_bottom_, kProtReadWrite);
  (void)protections_.TakeChanges();
}

void MemoryMap::RestoreDynamicState(
    uint64_t brk, std::map<uint64_t, uint64_t> regions,
    std::optional<std::map<uint64_t, ProtectionMap::Span>> protections) {
  brk_ = brk;
  regions_ = std::move(regions);
  if (protections) {
    protections_.Restore(std::move(*protections));
    return;
  }
  protections_.Restore({});
  protections_.Set(image_start_, AlignUp(brk_, kPageSize) - image_start_, kProtAll);
  for (const auto& [start, length] : regions_) protections_.Set(start, length, kProtAll);
  protections_.Set(stack_bottom_, ram_size_ - stack_bottom_, kProtAll);
  (void)protections_.TakeChanges();
}

Result<void> MemoryMap::Protect(uint64_t addr, uint64_t length, uint8_t prot) {
  // As Linux: the mapped pages up to the first hole change, then the hole fails the call.
  uint64_t mapped = 0;
  bool hole = false;
  protections_.ForEachRun(addr, length, [&](uint64_t, uint64_t len, std::optional<uint8_t> p) {
    if (!p) hole = true;
    if (!hole) mapped += len;
  });
  protections_.Set(addr, mapped, prot);
  if (hole) return FailErrno(ENOMEM, "mprotect of unmapped memory");
  return {};
}

uint64_t MemoryMap::LowestRegion() const {
  return regions_.empty() ? mmap_top_ : regions_.begin()->first;
}

bool MemoryMap::RangeFree(uint64_t addr, uint64_t length) const {
  auto it = regions_.lower_bound(addr);
  if (it != regions_.end() && it->first < addr + length) return false;
  if (it != regions_.begin()) {
    auto prev = std::prev(it);
    if (prev->first + prev->second > addr) return false;
  }
  return true;
}

uint64_t MemoryMap::SetBrk(uint64_t requested, uint64_t* released_start, uint64_t* released_len) {
  *released_start = 0;
  *released_len = 0;
  if (requested < brk_start_) return brk_;
  uint64_t new_end = AlignUp(requested, kPageSize);
  if (new_end < requested || new_end > LowestRegion()) return brk_;  // would hit mmap space
  uint64_t old_end = AlignUp(brk_, kPageSize);
  if (new_end < old_end) {
    *released_start = new_end;
    *released_len = old_end - new_end;
    protections_.Clear(new_end, old_end - new_end);
  } else if (new_end > old_end) {
    protections_.Set(old_end, new_end - old_end, kProtReadWrite);
  }
  brk_ = requested;
  return brk_;
}

Result<uint64_t> MemoryMap::Map(uint64_t hint, uint64_t length, bool fixed, uint8_t prot) {
  if (length == 0 || length % kPageSize != 0) return FailErrno(EINVAL, "mmap length");
  const uint64_t floor = AlignUp(brk_, kPageSize);
  if (fixed) {
    if (hint % kPageSize != 0) return FailErrno(EINVAL, "MAP_FIXED address");
    if (hint < floor || hint > mmap_top_ || length > mmap_top_ - hint) {
      return FailErrno(ENOMEM, "MAP_FIXED range outside the mmap area");
    }
    Unmap(hint, length);
    regions_[hint] = length;
    protections_.Set(hint, length, prot);
    return hint;
  }
  // A hint that is free is honoured, as Linux does.
  if (hint != 0 && hint % kPageSize == 0 && hint >= floor && hint <= mmap_top_ &&
      length <= mmap_top_ - hint && RangeFree(hint, length)) {
    regions_[hint] = length;
    protections_.Set(hint, length, prot);
    return hint;
  }
  // Top-down first fit below mmap_top.
  uint64_t gap_end = mmap_top_;
  for (auto it = regions_.rbegin(); it != regions_.rend(); ++it) {
    uint64_t region_end = it->first + it->second;
    if (gap_end >= region_end && gap_end - region_end >= length) break;
    gap_end = it->first;
  }
  if (gap_end < floor || gap_end - floor < length) {
    return FailErrno(ENOMEM, "guest address space exhausted");
  }
  uint64_t address = gap_end - length;
  regions_[address] = length;
  protections_.Set(address, length, prot);
  return address;
}

std::vector<std::pair<uint64_t, uint64_t>> MemoryMap::Unmap(uint64_t addr, uint64_t length) {
  std::vector<std::pair<uint64_t, uint64_t>> removed;
  const uint64_t end = addr + length < addr ? ~0ULL : addr + length;
  auto it = regions_.lower_bound(addr);
  if (it != regions_.begin()) --it;
  while (it != regions_.end() && it->first < end) {
    uint64_t start = it->first, stop = it->first + it->second;
    if (stop <= addr) {
      ++it;
      continue;
    }
    it = regions_.erase(it);
    uint64_t cut_start = start < addr ? addr : start;
    uint64_t cut_end = stop > end ? end : stop;
    removed.emplace_back(cut_start, cut_end - cut_start);
    protections_.Clear(cut_start, cut_end - cut_start);
    if (start < addr) regions_[start] = addr - start;
    if (stop > end) it = regions_.emplace(end, stop - end).first;
  }
  return removed;
}

Result<uint64_t> MemoryMap::Remap(uint64_t addr, uint64_t old_length, uint64_t new_length,
                                  bool may_move) {
  if (addr % kPageSize != 0 || old_length == 0 || new_length == 0 ||
      AlignUp(old_length, kPageSize) < old_length) {
    return FailErrno(EINVAL, "mremap arguments");
  }
  old_length = AlignUp(old_length, kPageSize);
  new_length = AlignUp(new_length, kPageSize);
  auto it = regions_.upper_bound(addr);
  if (it == regions_.begin()) return FailErrno(EFAULT, "mremap of unmapped memory");
  --it;
  uint64_t region_end = it->first + it->second;
  if (addr + old_length > region_end) return FailErrno(EFAULT, "mremap of unmapped memory");
  if (new_length <= old_length) {
    Unmap(addr + new_length, old_length - new_length);
    return addr;
  }
  uint64_t grow = new_length - old_length;
  const uint8_t prot = protections_.At(addr + old_length - kPageSize).value_or(0);
  if (addr + old_length == region_end && region_end + grow <= mmap_top_ &&
      RangeFree(region_end, grow)) {
    it->second += grow;
    protections_.Set(region_end, grow, prot);
    return addr;
  }
  if (!may_move) return FailErrno(ENOMEM, "mremap cannot grow in place");
  return Map(0, new_length, false, prot);
}

uint64_t MemoryMap::MappedBytes() const {
  uint64_t total = AlignUp(brk_, kPageSize) - image_start_ + (ram_size_ - stack_bottom_);
  for (const auto& [start, length] : regions_) total += length;
  return total;
}

}  // namespace flurry
