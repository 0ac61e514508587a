#include "arch/x86_64/cpu_setup.h"

#include <sys/ioctl.h>

#include <cstring>
#include <memory>
#include <span>

#include "arch/x86_64/cpu_features.h"
#include "arch/x86_64/layout.h"
#include "kvm/kvm_abi.h"

namespace flurry::x86 {
namespace {

constexpr uint64_t kCr0 = 0x80050033;  // PG | AM | WP | NE | ET | MP | PE
constexpr uint64_t kCr4 =
    (1 << 5) | (1 << 9) | (1 << 10) | (1 << 18);  // PAE OSFXSR OSXMMEXCPT OSXSAVE
constexpr uint64_t kEfer = (1 << 0) | (1 << 8) | (1 << 10) | (1 << 11);  // SCE LME LMA NXE
// RFLAGS bits cleared on syscall entry (as Linux does): TF DF IF AC NT.
constexpr uint64_t kSfmask = 0x47700;

kvm_segment Segment(uint16_t selector, uint8_t type, uint8_t dpl, bool code64) {
  kvm_segment s{};
  s.base = 0;
  s.limit = 0xffffffff;
  s.selector = selector;
  s.type = type;
  s.present = 1;
  s.dpl = dpl;
  s.db = code64 ? 0 : 1;
  s.s = 1;
  s.l = code64 ? 1 : 0;
  s.g = 1;
  return s;
}

Result<std::vector<kvm_cpuid_entry2>> SupportedCpuid(const KvmSystem& system) {
  constexpr int kMaxEntries = 256;
  auto buffer = std::make_unique<kvm_abi::Array<kvm_cpuid_entry2, kMaxEntries>>();
  buffer->header.count = kMaxEntries;
  if (ioctl(system.fd(), kvm_abi::kGetSupportedCpuid, buffer.get()) != 0) {
    return FailErrno("KVM_GET_SUPPORTED_CPUID");
  }
  return std::vector<kvm_cpuid_entry2>(buffer->entries, buffer->entries + buffer->header.count);
}

}  // namespace

kvm_sregs ProcessModeSregs(kvm_sregs s, int vcpu) {
  s.cs = Segment(kUserCodeSelector, 0xb, 3, true);
  kvm_segment data = Segment(kUserDataSelector, 0x3, 3, false);
  s.ds = s.es = s.fs = s.gs = s.ss = data;
  s.tr = kvm_segment{};
  s.tr.base = TssOfVcpu(vcpu);
  s.tr.limit = 103;
  s.tr.selector = TssSelectorOfVcpu(vcpu);
  s.tr.type = 0xb;  // busy 64-bit TSS
  s.tr.present = 1;
  s.ldt = kvm_segment{};
  s.ldt.unusable = 1;
  s.gdt.base = kGdtAddr;
  s.gdt.limit = kGdtEntries * 8 - 1;
  s.idt.base = kIdtAddr;
  s.idt.limit = kExceptionVectors * 16 - 1;
  s.cr0 = kCr0;
  s.cr3 = kPageTablesAddr;
  s.cr4 = kCr4;
  s.efer = kEfer;
  return s;
}

std::vector<kvm_msr_entry> ProcessModeMsrs() {
  auto msr = [](uint32_t index, uint64_t value) {
    kvm_msr_entry e{};
    e.index = index;
    e.data = value;
    return e;
  };
  const uint64_t star =
      (uint64_t{kKernelDataSelector} << 48) | (uint64_t{kKernelCodeSelector} << 32);
  return {msr(kMsrStar, star),     msr(kMsrLstar, kSyscallGateAddr),
          msr(kMsrCstar, 0),       msr(kMsrSfmask, kSfmask),
          msr(kMsrFsBase, 0),      msr(kMsrGsBase, 0),
          msr(kMsrKernelGsBase, 0)};
}

uint64_t GuestXcr0(std::span<const kvm_cpuid_entry2> supported) {
  uint64_t kvm_mask = 0;
  for (const kvm_cpuid_entry2& e : supported) {
    if (e.function == 0xd && e.index == 0) kvm_mask = (uint64_t{e.edx} << 32) | e.eax;
  }
  // x87 and SSE state always exist; the rest only where both the host OS and KVM support it.
  return (HostXcr0() & kvm_mask) | 0x3;
}

Result<uint64_t> SetupProcessModeVcpu(const KvmSystem& system, KvmVcpu& vcpu, int index,
                                      uint64_t entry, uint64_t stack_pointer) {
  auto cpuid = FLURRY_TRY_CTX(SupportedCpuid(system), "reading the host CPUID");
  FLURRY_TRY_CTX(vcpu.SetCpuid(cpuid), "setting the guest CPUID");
  const uint64_t xcr0 = GuestXcr0(cpuid);
  if (HostXcr0() != 0) {
    FLURRY_TRY_CTX(vcpu.SetXcr0(xcr0), fmt::format("setting XCR0 to {:#x}", xcr0));
  }
  kvm_sregs sregs = FLURRY_TRY(vcpu.GetSregs());
  FLURRY_TRY_CTX(vcpu.SetSregs(ProcessModeSregs(sregs, index)), "entering 64-bit user mode");
  FLURRY_TRY_CTX(vcpu.SetMsrs(ProcessModeMsrs()), "setting the SYSCALL MSRs");
  kvm_regs regs{};
  regs.rip = entry;
  regs.rsp = stack_pointer;
  regs.rflags = 0x202;  // IF and the always-one bit
  FLURRY_TRY(vcpu.SetRegs(regs));
  return HostXcr0() != 0 ? xcr0 : 0;
}

}  // namespace flurry::x86
