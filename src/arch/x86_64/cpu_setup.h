// The vCPU state a process-mode guest starts in: 64-bit long mode at CPL3, paging on, the
// SYSCALL MSRs pointing at the syscall gate, and the host's CPUID and XCR0.
#pragma once

#include <linux/kvm.h>

#include <cstdint>
#include <vector>

#include "base/error.h"
#include "kvm/kvm_system.h"
#include "kvm/kvm_vcpu.h"

namespace flurry::x86 {

inline constexpr uint32_t kMsrEfer = 0xc0000080;
inline constexpr uint32_t kMsrStar = 0xc0000081;
inline constexpr uint32_t kMsrLstar = 0xc0000082;
inline constexpr uint32_t kMsrCstar = 0xc0000083;
inline constexpr uint32_t kMsrSfmask = 0xc0000084;
inline constexpr uint32_t kMsrFsBase = 0xc0000100;
inline constexpr uint32_t kMsrGsBase = 0xc0000101;
inline constexpr uint32_t kMsrKernelGsBase = 0xc0000102;

// Control and segment registers for CPL3 64-bit execution with the flurry GDT/IDT and vCPU
// `vcpu`'s TSS (layout.h: each vCPU has its own, for its own kernel stacks).
kvm_sregs ProcessModeSregs(kvm_sregs base, int vcpu);
// STAR/LSTAR/SFMASK and zeroed FS/GS bases.
std::vector<kvm_msr_entry> ProcessModeMsrs();

// Configures CPUID (the host's, as KVM supports it), XCR0, sregs, MSRs and the entry registers.
// Returns the guest's XCR0: the host's, less what KVM does not support (e.g. MPX under an
// emulated CPU); 0 on a CPU without XSAVE (XCR0 is then left alone).
// `index`: the vCPU's number (KVM_CREATE_VCPU), which picks its TSS.
Result<uint64_t> SetupProcessModeVcpu(const KvmSystem& system, KvmVcpu& vcpu, int index,
                                      uint64_t entry, uint64_t stack_pointer);

}  // namespace flurry::x86
