#include "arch/x86_64/page_tables.h"

#include <algorithm>
#include <cstring>
#include <optional>

#include "arch/x86_64/layout.h"

namespace flurry::x86 {
namespace {

// The low 2 MiB: which 4 KiB pages are mapped, and how.
struct SystemPage {
  uint64_t address;
  uint64_t count;
  uint64_t flags;
  uint64_t target;  // physical address (0: identity)
};

constexpr uint64_t kSupervisorRw = kPtePresent | kPteWritable;
constexpr uint64_t kUserRo = kPtePresent | kPteUser;
constexpr uint64_t kUserRw = kPtePresent | kPteWritable | kPteUser;

constexpr SystemPage kSystemPages[] = {
    {kGdtAddr, 1, kSupervisorRw, 0},
    {kIdtAddr, 1, kSupervisorRw, 0},
    {kTssAddr, 1, kSupervisorRw, 0},
    {kExceptionStubsAddr, 1, kSupervisorRw, 0},
    {kSyscallGateAddr, 1, kUserRo, 0},
    {kKernelStackBottom, (kFaultStackTop - kKernelStackBottom) / kPageSize, kSupervisorRw, 0},
    {kVcpuStacksAddr, (StacksOfVcpu(kMaxVcpus - 1).fault_top - kVcpuStacksAddr) / kPageSize,
     kSupervisorRw, 0},
    {kVvarAddr, 1, kUserRo, 0},
    {kVdsoAddr, kVdsoMaxSize / kPageSize, kUserRo, 0},
    {kDoorbellAddr, 1, kUserRw, kDoorbellGpa},
};

// Where BuildPageTables puts its tables: PML4, PDPT, the system area's table, then one page
// directory per GiB of RAM; the rest of [kPageTablesAddr, kPageTablesEnd) is the pool of 4 KiB
// tables for user memory.
constexpr uint64_t kPml4 = kPageTablesAddr;
constexpr uint64_t kPdpt = kPml4 + kPageSize;
constexpr uint64_t kLowTable = kPdpt + kPageSize;
constexpr uint64_t kFirstPd = kLowTable + kPageSize;

uint64_t Gigabytes(uint64_t ram) { return AlignUp(ram, 1ULL << 30) >> 30; }

// The entry bits for user pages with PageAccess `access` (0: not present).
uint64_t UserEntryBits(uint8_t access) {
  if (access == 0) return 0;
  uint64_t bits = kPtePresent | kPteUser;
  if (access & kProtWrite) bits |= kPteWritable;
  if (!(access & kProtExec)) bits |= kPteNoExecute;
  return bits;
}

bool InHole(uint64_t address, std::span<const AddressRange> holes) {
  for (const auto& hole : holes) {
    if (address >= hole.start && address - hole.start < hole.length) return true;
  }
  return false;
}

}  // namespace

Result<void> BuildPageTables(GuestMemory& memory, std::span<const AddressRange> holes) {
  const uint64_t ram = memory.size();
  if (ram < kMinRamSize || ram > kMaxRamSize || ram % kHugePageSize != 0) {
    return Fail("guest memory size {:#x} is outside {:#x}..{:#x} or not 2 MiB aligned", ram,
                kMinRamSize, kMaxRamSize);
  }
  const uint64_t gigabytes = Gigabytes(ram);
  const uint64_t pml4 = kPml4;
  const uint64_t pdpt = kPdpt;
  const uint64_t low_pt = kLowTable;
  const uint64_t first_pd = kFirstPd;
  const uint64_t end = first_pd + gigabytes * kPageSize;
  if (end > kPageTablesEnd) return Fail("page tables for {:#x} bytes do not fit", ram);

  uint8_t* base = memory.HostPointer(kPageTablesAddr, end - kPageTablesAddr);
  std::memset(base, 0, end - kPageTablesAddr);
  auto entry = [&](uint64_t table, uint64_t index) -> uint64_t& {
    return *reinterpret_cast<uint64_t*>(memory.HostPointer(table + index * 8, 8));
  };

  entry(pml4, 0) = pdpt | kUserRw;
  for (uint64_t g = 0; g < gigabytes; ++g) {
    uint64_t pd = first_pd + g * kPageSize;
    entry(pdpt, g) = pd | kUserRw;
    for (uint64_t i = 0; i < 512; ++i) {
      uint64_t address = (g << 30) + (i << 21);
      if (address == 0) {
        entry(pd, i) = low_pt | kUserRw;  // the system area, 4 KiB pages
      } else if (address < ram && !InHole(address, holes)) {
        entry(pd, i) = address | kUserRw | kPteHuge;
      }
    }
  }
  for (const auto& page : kSystemPages) {
    for (uint64_t k = 0; k < page.count; ++k) {
      uint64_t va = page.address + k * kPageSize;
      uint64_t pa = (page.target != 0 ? page.target : page.address) + k * kPageSize;
      entry(low_pt, va / kPageSize) = pa | page.flags;
    }
  }
  return {};
}

std::optional<Translation> Translate(const GuestMemory& memory, uint64_t va) {
  if (va >> 39 != 0) return std::nullopt;  // only PML4 slot 0 is used
  auto read = [&](uint64_t table, uint64_t index) -> std::optional<uint64_t> {
    uint64_t address = table + index * 8;
    if (address + 8 > memory.size()) return std::nullopt;
    uint64_t value;
    std::memcpy(&value, memory.host_base() + address, 8);
    return value;
  };
  uint64_t flags = kPteUser | kPteWritable;
  uint64_t no_execute = 0;
  auto pml4e = read(kPageTablesAddr, 0);
  if (!pml4e || !(*pml4e & kPtePresent)) return std::nullopt;
  flags &= *pml4e;
  auto pdpte = read(*pml4e & kPteAddressMask, (va >> 30) & 511);
  if (!pdpte || !(*pdpte & kPtePresent)) return std::nullopt;
  flags &= *pdpte;
  auto pde = read(*pdpte & kPteAddressMask, (va >> 21) & 511);
  if (!pde || !(*pde & kPtePresent)) return std::nullopt;
  flags &= *pde;
  no_execute |= *pml4e | *pdpte | *pde;
  if (*pde & kPteHuge) {
    return Translation{(*pde & kPteAddressMask & ~(kHugePageSize - 1)) + (va & (kHugePageSize - 1)),
                       (flags & kPteUser) != 0, (flags & kPteWritable) != 0,
                       (no_execute & kPteNoExecute) == 0, kHugePageSize};
  }
  auto pte = read(*pde & kPteAddressMask & ~kPteNoExecute, (va >> 12) & 511);
  if (!pte || !(*pte & kPtePresent)) return std::nullopt;
  flags &= *pte;
  no_execute |= *pte;
  return Translation{(*pte & kPteAddressMask) + (va & (kPageSize - 1)), (flags & kPteUser) != 0,
                     (flags & kPteWritable) != 0, (no_execute & kPteNoExecute) == 0, kPageSize};
}

UserPageTables::UserPageTables(uint64_t ram_size) {
  for (uint64_t page = kPageTablesEnd - kPageSize;
       page >= kFirstPd + Gigabytes(ram_size) * kPageSize && page < kPageTablesEnd;
       page -= kPageSize) {
    free_.push_back(page);
  }
}

void UserPageTables::ReuseRetired() {
  free_.insert(free_.end(), retired_.begin(), retired_.end());
  retired_.clear();
}

Result<void> UserPageTables::Apply(GuestMemory& memory, const ProtectionMap& protections,
                                   uint64_t start, uint64_t length) {
  const uint64_t ram = memory.size();
  if (start >= ram || length == 0) return {};
  const uint64_t end = std::min(ram, start + length < start ? ram : start + length);
  auto slot = [&](uint64_t table, uint64_t index) -> uint64_t& {
    return *reinterpret_cast<uint64_t*>(memory.HostPointer(table + index * 8, 8));
  };
  for (uint64_t chunk = std::max(AlignDown(start, kHugePageSize), kUserBase); chunk < end;
       chunk += kHugePageSize) {
    uint64_t& pde = slot(kFirstPd + (chunk >> 30) * kPageSize, (chunk >> 21) & 511);
    // The access of each 4 KiB page of this 2 MiB page, in runs.
    struct Run {
      uint64_t start, length;
      uint8_t access;
    };
    std::vector<Run> runs;
    protections.ForEachAccessRun(chunk, kHugePageSize, [&](uint64_t at, uint64_t len, uint8_t a) {
      runs.push_back({at, len, a});
    });
    const bool has_table = (pde & kPtePresent) && !(pde & kPteHuge);
    const uint64_t table = pde & kPteAddressMask & ~kPteNoExecute;
    if (runs.size() == 1) {
      if (has_table) retired_.push_back(table);
      const uint64_t bits = UserEntryBits(runs[0].access);
      pde = bits == 0 ? 0 : chunk | bits | kPteHuge;
      continue;
    }
    uint64_t pt = table;
    if (!has_table) {
      if (free_.empty()) {
        return FailErrno(ENOMEM, fmt::format("no page table left for the 4 KiB pages at {:#x} "
                                             "(the page-table area holds {} tables)",
                                             chunk, (kPageTablesEnd - kFirstPd) / kPageSize));
      }
      pt = free_.back();
      free_.pop_back();
    }
    for (const Run& run : runs) {
      const uint64_t bits = UserEntryBits(run.access);
      for (uint64_t page = run.start; page < run.start + run.length; page += kPageSize) {
        slot(pt, (page >> 12) & 511) = bits == 0 ? 0 : page | bits;
      }
    }
    // A directory entry grants the most its table's entries may: they restrict.
    pde = pt | kPtePresent | kPteWritable | kPteUser;
  }
  return {};
}

}  // namespace flurry::x86
