// Builds the guest's 4-level page tables once, at VM creation.
//
// Identity map: guest virtual == guest physical. The first 2 MiB use 4 KiB pages so the NULL
// page stays unmapped and the system structures are supervisor-only; user RAM above uses 2 MiB
// pages (user, writable, executable). `holes` are 2 MiB-aligned user ranges left unmapped
// (the stack guard). See docs/design.md.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/error.h"
#include "memory/guest_memory.h"

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
  uint64_t page_size = 0;
};
std::optional<Translation> Translate(const GuestMemory& memory, uint64_t virtual_address);

// Page-table entry bits.
inline constexpr uint64_t kPtePresent = 1ULL << 0;
inline constexpr uint64_t kPteWritable = 1ULL << 1;
inline constexpr uint64_t kPteUser = 1ULL << 2;
inline constexpr uint64_t kPteHuge = 1ULL << 7;
inline constexpr uint64_t kPteAddressMask = 0x000ffffffffff000ULL;

}  // namespace flurry::x86
