// ProtectionMap: which pages of the guest's user address space a program may read, write or
// execute, as the loader, brk, mmap, mprotect and munmap leave them. A page outside every span
// is not mapped: any access to it faults (SEGV_MAPERR); a mapped page with no access faults too
// (SEGV_ACCERR).
//
// Plain data: part of the guest state (guest/memory_map.h) and of the VM descriptor. Every
// change is also recorded as a changed range, which the VMM hands to the execution backend
// (Backend::Protect) before the guest runs again; the record is transient, not state.
//
// Owner: the MemoryMap. Thread: the VM's run thread.
#pragma once

#include <sys/mman.h>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <utility>
#include <vector>

namespace flurry {

// PROT_READ | PROT_WRITE | PROT_EXEC, as mmap(2) takes them.
inline constexpr uint8_t kProtRead = PROT_READ;
inline constexpr uint8_t kProtWrite = PROT_WRITE;
inline constexpr uint8_t kProtExec = PROT_EXEC;
inline constexpr uint8_t kProtAll = kProtRead | kProtWrite | kProtExec;
inline constexpr uint8_t kProtReadWrite = kProtRead | kProtWrite;

// The access an x86 page gets for protection `prot` (nullopt: not mapped): none, or `prot`
// plus read — a present x86 page is always readable, so write-only and execute-only pages
// read too, as on Linux.
inline uint8_t PageAccess(std::optional<uint8_t> prot) {
  return (!prot || *prot == 0) ? 0 : static_cast<uint8_t>(*prot | kProtRead);
}

class ProtectionMap {
 public:
  struct Span {
    uint64_t end = 0;
    uint8_t prot = 0;
    bool operator==(const Span&) const = default;
  };
  // A run of pages with one protection (nullopt: not mapped).
  using RunVisitor = std::function<void(uint64_t start, uint64_t length, std::optional<uint8_t>)>;

  // Maps [start, start+length) with `prot` (page aligned; bits beyond kProtAll dropped),
  // replacing what was there.
  void Set(uint64_t start, uint64_t length, uint8_t prot);
  // Unmaps [start, start+length); parts already unmapped are ignored.
  void Clear(uint64_t start, uint64_t length);

  // The span holding `address` (nullptr: not mapped); valid until the next change.
  const Span* SpanAt(uint64_t address) const;
  // The protection of the page holding `address` (nullopt: not mapped).
  std::optional<uint8_t> At(uint64_t address) const {
    const Span* span = SpanAt(address);
    return span != nullptr ? std::optional<uint8_t>(span->prot) : std::nullopt;
  }
  // Whether every page of [start, start+length) is mapped.
  bool Covers(uint64_t start, uint64_t length) const;
  // Whether any page of [start, start+length) is mapped.
  bool Overlaps(uint64_t start, uint64_t length) const;
  // Visits [start, start+length) in maximal runs of one protection, in address order.
  void ForEachRun(uint64_t start, uint64_t length, const RunVisitor& visit) const;

  // Visits [start, start+length) in maximal runs of one PageAccess: what a backend applies.
  void ForEachAccessRun(uint64_t start, uint64_t length,
                        const std::function<void(uint64_t, uint64_t, uint8_t)>& visit) const;

  // start -> span, sorted, non-overlapping; adjacent spans have different protections.
  const std::map<uint64_t, Span>& spans() const { return spans_; }
  // Replaces everything (a restored descriptor). Records no change: the caller applies the
  // whole map.
  void Restore(std::map<uint64_t, Span> spans) { spans_ = std::move(spans); }

  // The ranges (start, length) changed since the last call, for the backend.
  std::vector<std::pair<uint64_t, uint64_t>> TakeChanges() { return std::move(changes_); }
  bool has_changes() const { return !changes_.empty(); }

  bool operator==(const ProtectionMap& other) const { return spans_ == other.spans_; }

 private:
  // Cuts the span containing `address` (if any) in two at `address`.
  void SplitAt(uint64_t address);
  // Joins the span starting at `address` with its neighbours of the same protection.
  void MergeAround(uint64_t address);
  // Removes [start, end) without recording a change.
  void Erase(uint64_t start, uint64_t end);
  void Record(uint64_t start, uint64_t length);

  std::map<uint64_t, Span> spans_;
  std::vector<std::pair<uint64_t, uint64_t>> changes_;
};

}  // namespace flurry
