#include "arch/x86_64/system_tables.h"

#include <csignal>
#include <cstring>
#include <vector>

#include "arch/x86_64/layout.h"
#include "base/check.h"

namespace flurry::x86 {
namespace {

constexpr uint64_t kKernelCode64 = 0x00209b0000000000ULL;  // P, DPL0, code, L
constexpr uint64_t kKernelData = 0x0000930000000000ULL;    // P, DPL0, data, writable
constexpr uint64_t kUserData = 0x0000f30000000000ULL;      // P, DPL3, data, writable
constexpr uint64_t kUserCode64 = 0x0020fb0000000000ULL;    // P, DPL3, code, L
constexpr uint32_t kTssLimit = 103;

void WriteGdt(GuestMemory& memory) {
  uint64_t gdt[kGdtEntries] = {};
  gdt[kKernelCodeSelector / 8] = kKernelCode64;
  gdt[kKernelDataSelector / 8] = kKernelData;
  gdt[kUserDataSelector / 8] = kUserData;
  gdt[kUserCodeSelector / 8] = kUserCode64;
  for (int vcpu = 0; vcpu < kMaxVcpus; ++vcpu) {
    const uint64_t tss = TssOfVcpu(vcpu);
    const size_t slot = TssSelectorOfVcpu(vcpu) / 8;
    gdt[slot] = (kTssLimit & 0xffff) | ((tss & 0xffffff) << 16) |
                (0x89ULL << 40) |  // P, type = available 64-bit TSS
                (((tss >> 24) & 0xff) << 56);
    gdt[slot + 1] = tss >> 32;
  }
  std::memcpy(memory.HostPointer(kGdtAddr, sizeof gdt), gdt, sizeof gdt);
}

void WriteTss(GuestMemory& memory, int vcpu) {
  uint8_t tss[kTssLimit + 1] = {};
  auto put64 = [&](size_t offset, uint64_t value) { std::memcpy(tss + offset, &value, 8); };
  const VcpuStacks stacks = StacksOfVcpu(vcpu);
  put64(4, stacks.kernel_top);       // RSP0
  put64(36, stacks.fault_top);       // IST1
  uint16_t iomap_base = sizeof tss;  // no I/O permission bitmap
  std::memcpy(tss + 102, &iomap_base, 2);
  std::memcpy(memory.HostPointer(TssOfVcpu(vcpu), sizeof tss), tss, sizeof tss);
}

void WriteIdtAndStubs(GuestMemory& memory) {
  for (int vector = 0; vector < kExceptionVectors; ++vector) {
    const uint64_t stub = kExceptionStubsAddr + vector * kExceptionStubSize;
    std::vector<uint8_t> code = {0xe6, static_cast<uint8_t>(kExceptionPortBase + vector)};
    if (VectorHasErrorCode(vector)) code.insert(code.end(), {0x48, 0x83, 0xc4, 0x08});
    code.insert(code.end(), {0x48, 0xcf});  // iretq
    FLURRY_CHECK(code.size() <= kExceptionStubSize);
    std::memcpy(memory.HostPointer(stub, code.size()), code.data(), code.size());

    const uint64_t ist = vector == 8 ? 1 : 0;  // double fault on its own stack
    // int3 and into may be executed at CPL3 (DPL3, as Linux): they raise #BP/#OF, not #GP.
    const uint64_t type = (vector == 3 || vector == 4) ? 0xeeULL : 0x8eULL;
    uint64_t gate[2];
    gate[0] = (stub & 0xffff) | (uint64_t{kKernelCodeSelector} << 16) | (ist << 32) |
              (type << 40) |  // P, DPL0 (DPL3 for 3, 4), 64-bit interrupt gate
              (((stub >> 16) & 0xffff) << 48);
    gate[1] = stub >> 32;
    std::memcpy(memory.HostPointer(kIdtAddr + vector * 16, 16), gate, 16);
  }
}

// mov [kDoorbellAddr], eax ; sysretq
constexpr uint8_t kGateCode[] = {
    0x89, 0x04, 0x25, kDoorbellAddr & 0xff, (kDoorbellAddr >> 8) & 0xff, 0x00, 0x00,
    0x48, 0x0f, 0x07};
constexpr uint64_t kGateDoorbellInsnLength = 7;

}  // namespace

void WriteSystemTables(GuestMemory& memory) {
  WriteGdt(memory);
  for (int vcpu = 0; vcpu < kMaxVcpus; ++vcpu) WriteTss(memory, vcpu);
  WriteIdtAndStubs(memory);
  std::memcpy(memory.HostPointer(kSyscallGateAddr, sizeof kGateCode), kGateCode, sizeof kGateCode);
}

uint64_t IretqRip() {
  // Vector 0's stub is `out kExceptionPortBase, al` (2 bytes) then `iretq` (WriteIdtAndStubs).
  return kExceptionStubsAddr + 2;
}

uint64_t SyscallGateExitRip() { return kSyscallGateAddr + kGateDoorbellInsnLength; }

}  // namespace flurry::x86
