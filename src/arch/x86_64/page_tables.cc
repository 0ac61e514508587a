#include "arch/x86_64/page_tables.h"

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
    {kVvarAddr, 1, kUserRo, 0},
    {kVdsoAddr, kVdsoMaxSize / kPageSize, kUserRo, 0},
    {kDoorbellAddr, 1, kUserRw, kDoorbellGpa},
};

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
  const uint64_t gigabytes = AlignUp(ram, 1ULL << 30) >> 30;
  const uint64_t pml4 = kPageTablesAddr;
  const uint64_t pdpt = pml4 + kPageSize;
  const uint64_t low_pt = pdpt + kPageSize;
  const uint64_t first_pd = low_pt + kPageSize;
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
  auto pml4e = read(kPageTablesAddr, 0);
  if (!pml4e || !(*pml4e & kPtePresent)) return std::nullopt;
  flags &= *pml4e;
  auto pdpte = read(*pml4e & kPteAddressMask, (va >> 30) & 511);
  if (!pdpte || !(*pdpte & kPtePresent)) return std::nullopt;
  flags &= *pdpte;
  auto pde = read(*pdpte & kPteAddressMask, (va >> 21) & 511);
  if (!pde || !(*pde & kPtePresent)) return std::nullopt;
  flags &= *pde;
  if (*pde & kPteHuge) {
    return Translation{(*pde & kPteAddressMask & ~(kHugePageSize - 1)) + (va & (kHugePageSize - 1)),
                       (flags & kPteUser) != 0, (flags & kPteWritable) != 0, kHugePageSize};
  }
  auto pte = read(*pde & kPteAddressMask, (va >> 12) & 511);
  if (!pte || !(*pte & kPtePresent)) return std::nullopt;
  flags &= *pte;
  return Translation{(*pte & kPteAddressMask) + (va & (kPageSize - 1)), (flags & kPteUser) != 0,
                     (flags & kPteWritable) != 0, kPageSize};
}

}  // namespace flurry::x86
