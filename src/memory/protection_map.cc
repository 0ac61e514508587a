#include "memory/protection_map.h"

#include <algorithm>
#include <iterator>

namespace flurry {

void ProtectionMap::SplitAt(uint64_t address) {
  auto it = spans_.upper_bound(address);
  if (it == spans_.begin()) return;
  --it;
  if (it->first == address || it->second.end <= address) return;
  const Span tail{it->second.end, it->second.prot};
  it->second.end = address;
  spans_.emplace(address, tail);
}

void ProtectionMap::MergeAround(uint64_t address) {
  auto it = spans_.find(address);
  if (it == spans_.end()) return;
  auto next = std::next(it);
  if (next != spans_.end() && next->first == it->second.end &&
      next->second.prot == it->second.prot) {
    it->second.end = next->second.end;
    spans_.erase(next);
  }
  if (it != spans_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end == it->first && prev->second.prot == it->second.prot) {
      prev->second.end = it->second.end;
      spans_.erase(it);
    }
  }
}

void ProtectionMap::Record(uint64_t start, uint64_t length) {
  if (!changes_.empty()) {
    auto& last = changes_.back();
    if (last.first + last.second == start) {
      last.second += length;
      return;
    }
  }
  changes_.emplace_back(start, length);
}

void ProtectionMap::Erase(uint64_t start, uint64_t end) {
  SplitAt(start);
  SplitAt(end);
  auto it = spans_.lower_bound(start);
  while (it != spans_.end() && it->first < end) it = spans_.erase(it);
}

void ProtectionMap::Clear(uint64_t start, uint64_t length) {
  if (length == 0) return;
  const uint64_t end = start + length < start ? ~0ULL : start + length;
  if (!Overlaps(start, end - start)) return;
  Record(start, end - start);
  Erase(start, end);
}

void ProtectionMap::Set(uint64_t start, uint64_t length, uint8_t prot) {
  if (length == 0 || start + length < start) return;
  Record(start, length);
  Erase(start, start + length);
  spans_.emplace(start, Span{start + length, static_cast<uint8_t>(prot & kProtAll)});
  MergeAround(start);
}

const ProtectionMap::Span* ProtectionMap::SpanAt(uint64_t address) const {
  auto it = spans_.upper_bound(address);
  if (it == spans_.begin()) return nullptr;
  --it;
  return address < it->second.end ? &it->second : nullptr;
}

void ProtectionMap::ForEachRun(uint64_t start, uint64_t length, const RunVisitor& visit) const {
  const uint64_t end = start + length < start ? ~0ULL : start + length;
  uint64_t at = start;
  auto it = spans_.upper_bound(start);
  if (it != spans_.begin()) {
    auto prev = std::prev(it);
    if (prev->second.end > start) it = prev;
  }
  while (at < end) {
    if (it == spans_.end() || it->first >= end) {
      visit(at, end - at, std::nullopt);
      return;
    }
    if (it->first > at) {
      visit(at, it->first - at, std::nullopt);
      at = it->first;
    }
    const uint64_t stop = std::min(it->second.end, end);
    visit(at, stop - at, it->second.prot);
    at = stop;
    ++it;
  }
}

void ProtectionMap::ForEachAccessRun(
    uint64_t start, uint64_t length,
    const std::function<void(uint64_t, uint64_t, uint8_t)>& visit) const {
  uint64_t run_start = start, run_length = 0;
  uint8_t run_access = 0;
  ForEachRun(start, length, [&](uint64_t at, uint64_t len, std::optional<uint8_t> prot) {
    const uint8_t access = PageAccess(prot);
    if (run_length != 0 && access != run_access) {
      visit(run_start, run_length, run_access);
      run_start = at;
      run_length = 0;
    }
    run_access = access;
    run_length += len;
  });
  if (run_length != 0) visit(run_start, run_length, run_access);
}

bool ProtectionMap::Covers(uint64_t start, uint64_t length) const {
  bool covered = true;
  ForEachRun(start, length, [&](uint64_t, uint64_t, std::optional<uint8_t> prot) {
    if (!prot) covered = false;
  });
  return covered;
}

bool ProtectionMap::Overlaps(uint64_t start, uint64_t length) const {
  bool any = false;
  ForEachRun(start, length, [&](uint64_t, uint64_t, std::optional<uint8_t> prot) {
    if (prot) any = true;
  });
  return any;
}

}  // namespace flurry
