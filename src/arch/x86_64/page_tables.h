// The guest's 4-level page tables: built at VM creation, then edited as the guest's page
// protections change.
//
// Identity map: guest virtual == guest physical. The first 2 MiB use 4 KiB pages so the NULL
// page stays unmapped and the system structures are supervisor-only. User RAM above starts as
// 2 MiB pages (user, writable, executable); `holes` are 2 MiB-aligned user ranges left
// unmapped (the stack guard). UserPageTables then gives each user page the access its
// protection allows: a 2 MiB page whose 512 pages agree keeps one large entry, one whose pages
// differ gets a 4 KiB table from a pool in the page-table area. See docs/design.md ("Memory
// protection").
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/error.h"
#include "memory/guest_memory.h"
#include "memory/protection_map.h"

namespace flurry::x86 {

struct AddressRange {
  uint64_t start = 0;
  uint64_t length = 0;
};

Result<void> BuildPageTables(GuestMemory& memory, std::span<const AddressRange> holes);

// Walks the page tables in `memory` like the MMU would (for tests and fault diagnostics).
struct Translation {
  uint64_t physical = 0;
  bool user = false;
  bool writable = false;
  bool executable = false;
  uint64_t page_size = 0;
};
std::optional<Translation> Translate(const GuestMemory& memory, uint64_t virtual_address);

// Page-table entry bits.
inline constexpr uint64_t kPtePresent = 1ULL << 0;
inline constexpr uint64_t kPteWritable = 1ULL << 1;
inline constexpr uint64_t kPteUser = 1ULL << 2;
inline constexpr uint64_t kPteHuge = 1ULL << 7;
inline constexpr uint64_t kPteNoExecute = 1ULL << 63;
inline constexpr uint64_t kPteAddressMask = 0x000ffffffffff000ULL;

// Edits the user part of the tables BuildPageTables made in a local GuestMemory.
//
// Plain data (the free table pages): copied with the VMM's fork along with the memory it
// describes. Owner: the KVM backend; thread: the VM's run thread. After Apply the vCPUs' TLBs
// may hold old translations: the caller flushes them before the guest runs again.
//
// A table that leaves the tables (its 2 MiB page became one large entry) is *retired*, not
// free: a vCPU running meanwhile may still walk it through a cached directory entry, and must
// not find another 2 MiB page's entries there. ReuseRetired(), once no vCPU can (every TLB
// flushed, or the only vCPU stopped and flushed before it runs), puts them back in the pool.
class UserPageTables {
 public:
  // The pool is every page-table page BuildPageTables left unused for `ram_size` bytes of RAM.
  explicit UserPageTables(uint64_t ram_size);

  // Rewrites the entries of every 2 MiB page overlapping [start, start+length) (user memory)
  // from `protections`. ENOMEM when a 2 MiB page needs a 4 KiB table and the pool is empty
  // (retired tables are not used); the entries already rewritten stay.
  Result<void> Apply(GuestMemory& memory, const ProtectionMap& protections, uint64_t start,
                     uint64_t length);

  void ReuseRetired();

  size_t free_tables() const { return free_.size(); }
  size_t retired_tables() const { return retired_.size(); }

 private:
  std::vector<uint64_t> free_;     // guest-physical addresses of unused table pages
  std::vector<uint64_t> retired_;  // left the tables since the last ReuseRetired()
};

}  // namespace flurry::x86
