// The guest address layout of a flurry process-mode VM.
//
// Guest virtual addresses equal guest physical addresses (identity map), so a guest pointer is
// an offset into guest RAM. The first 2 MiB hold the VMM-built system structures and are mapped
// with 4 KiB pages; everything above is user memory mapped with 2 MiB pages. See
// docs/design.md ("Guest address layout").
#pragma once

#include <cstdint>

namespace flurry::x86 {

inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kHugePageSize = 2ULL << 20;

// System area: 4 KiB pages inside the first 2 MiB. Page 0 is never mapped (NULL faults).
inline constexpr uint64_t kGdtAddr = 0x1000;             // supervisor, GDT
inline constexpr uint64_t kIdtAddr = 0x2000;             // supervisor, IDT (256 gates)
inline constexpr uint64_t kTssAddr = 0x3000;             // supervisor, one 64-bit TSS per vCPU
inline constexpr uint64_t kExceptionStubsAddr = 0x4000;  // supervisor, one stub per vector
inline constexpr uint64_t kExceptionStubSize = 16;
inline constexpr uint64_t kSyscallGateAddr = 0x5000;    // user+exec: LSTAR target
inline constexpr uint64_t kKernelStackBottom = 0x6000;  // supervisor, 2 pages (vCPU 0)
inline constexpr uint64_t kKernelStackTop = 0x8000;     // TSS.RSP0 (vCPU 0)
inline constexpr uint64_t kFaultStackTop = 0x9000;      // TSS.IST1 (double fault), 1 page
inline constexpr uint64_t kVvarAddr = 0xA000;           // user read-only: clock data page
inline constexpr uint64_t kVdsoAddr = 0xB000;           // user+exec: vDSO image (up to 4 pages)
inline constexpr uint64_t kVdsoMaxSize = 4 * kPageSize;
inline constexpr uint64_t kDoorbellAddr = 0xF000;     // user: MMIO doorbell (no RAM behind)
inline constexpr uint64_t kVcpuStacksAddr = 0x10000;  // supervisor: vCPUs 1.. (below)
inline constexpr uint64_t kPageTablesAddr = 0x20000;  // page tables (not mapped)
inline constexpr uint64_t kPageTablesEnd = 0x200000;

// Guest physical address the doorbell page points at: outside every memory slot, so a write
// there is an MMIO exit. Chosen above the largest supported RAM size.
inline constexpr uint64_t kDoorbellGpa = 1ULL << 38;  // 256 GiB

// Whether `rip` is in the code flurry puts in the system area for KVM (exception stubs,
// syscall gate): a vCPU stopped there is between the guest's instructions and the VMM.
inline constexpr bool InSystemCode(uint64_t rip) {
  return rip >= kExceptionStubsAddr && rip < kKernelStackBottom;
}

// User memory starts at 2 MiB.
inline constexpr uint64_t kUserBase = 2ULL << 20;

// RAM size limits (page tables for kMaxRamSize fit in [kPageTablesAddr, kPageTablesEnd)).
inline constexpr uint64_t kMinRamSize = 16ULL << 20;
inline constexpr uint64_t kMaxRamSize = 64ULL << 30;

// vCPUs: a VM may run its threads on up to kMaxVcpus vCPUs (the KVM backend's lanes). Each
// has a TSS of its own in the TSS page (kTssStride apart), a GDT descriptor for it, and its own
// kernel and double-fault stacks: vCPU 0 those above, vCPU n > 0 one page of each at
// kVcpuStacksAddr + (n-1) * 2 pages.
inline constexpr int kMaxVcpus = 8;
inline constexpr uint64_t kTssStride = 128;
struct VcpuStacks {
  uint64_t bottom;      // lowest address of the kernel stack
  uint64_t kernel_top;  // TSS.RSP0
  uint64_t fault_top;   // TSS.IST1; the double-fault stack is [kernel_top, fault_top)
};
inline constexpr VcpuStacks StacksOfVcpu(int vcpu) {
  if (vcpu == 0) return {kKernelStackBottom, kKernelStackTop, kFaultStackTop};
  const uint64_t base = kVcpuStacksAddr + static_cast<uint64_t>(vcpu - 1) * 2 * kPageSize;
  return {base, base + kPageSize, base + 2 * kPageSize};
}
inline constexpr uint64_t TssOfVcpu(int vcpu) {
  return kTssAddr + static_cast<uint64_t>(vcpu) * kTssStride;
}
static_assert(kMaxVcpus * kTssStride <= kPageSize);
static_assert(kVcpuStacksAddr >= kDoorbellAddr + kPageSize);
static_assert(StacksOfVcpu(kMaxVcpus - 1).fault_top <= kPageTablesAddr);

// Segment selectors (GDT layout fixed for SYSCALL/SYSRET: STAR[47:32]=0x08, STAR[63:48]=0x10).
inline constexpr uint16_t kKernelCodeSelector = 0x08;
inline constexpr uint16_t kKernelDataSelector = 0x10;
inline constexpr uint16_t kUserDataSelector = 0x18 | 3;
inline constexpr uint16_t kUserCodeSelector = 0x20 | 3;
inline constexpr uint16_t kTssSelector = 0x28;  // vCPU n's: kTssSelector + 16 * n
inline constexpr uint16_t TssSelectorOfVcpu(int vcpu) {
  return static_cast<uint16_t>(kTssSelector + 16 * vcpu);
}
// null, kcode, kdata, udata, ucode, then a TSS (2 slots) per vCPU.
inline constexpr int kGdtEntries = 5 + 2 * kMaxVcpus;

// Port numbers the exception stubs write to: kExceptionPortBase + vector.
inline constexpr uint16_t kExceptionPortBase = 0x80;
inline constexpr int kExceptionVectors = 32;

inline constexpr uint64_t AlignDown(uint64_t v, uint64_t a) { return v & ~(a - 1); }
inline constexpr uint64_t AlignUp(uint64_t v, uint64_t a) { return (v + a - 1) & ~(a - 1); }

}  // namespace flurry::x86
