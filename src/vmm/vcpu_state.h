// Capturing the vCPU's complete KVM state into a VcpuState (snapshot/vm_descriptor.h) and
// loading one into a freshly created vCPU — the CPU half of cloning and restoring a VM.
#pragma once

#include "base/error.h"
#include "kvm/kvm_system.h"
#include "kvm/kvm_vcpu.h"
#include "snapshot/vm_descriptor.h"

namespace flurry {

// Reads sregs, XSAVE, XCR0 and the MSRs flurry sets; `regs` are the general registers to record
// (the caller passes the post-syscall values it wants the VM to resume with).
Result<VcpuState> CaptureVcpu(const KvmVcpu& vcpu, const kvm_regs& regs, uint64_t xcr0);

// Loads `state` into a new vCPU: CPUID (the host's), XCR0, sregs, MSRs, XSAVE, registers.
Result<void> RestoreVcpu(const KvmSystem& system, KvmVcpu& vcpu, const VcpuState& state);

}  // namespace flurry
