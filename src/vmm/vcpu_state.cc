#include "vmm/vcpu_state.h"

#include "arch/x86_64/cpu_setup.h"

namespace flurry {

Result<VcpuState> CaptureVcpu(const KvmVcpu& vcpu, const kvm_regs& regs, uint64_t xcr0) {
  VcpuState state;
  state.regs = regs;
  state.sregs = FLURRY_TRY_CTX(vcpu.GetSregs(), "capturing sregs");
  state.xsave = FLURRY_TRY_CTX(vcpu.GetXsave(), "capturing XSAVE state");
  state.xcr0 = xcr0;
  state.msrs = x86::ProcessModeMsrs();  // the indices flurry sets; values read back below
  FLURRY_TRY_CTX(vcpu.GetMsrs(state.msrs), "capturing MSRs");
  return state;
}

Result<void> RestoreVcpu(const KvmSystem& system, KvmVcpu& vcpu, const VcpuState& state) {
  FLURRY_TRY(x86::SetupProcessModeVcpu(system, vcpu, state.regs.rip, state.regs.rsp));
  FLURRY_TRY_CTX(vcpu.SetXcr0(state.xcr0), "restoring XCR0");
  FLURRY_TRY_CTX(vcpu.SetSregs(state.sregs), "restoring sregs");
  FLURRY_TRY_CTX(vcpu.SetMsrs(state.msrs), "restoring MSRs");
  FLURRY_TRY_CTX(vcpu.SetXsave(state.xsave), "restoring XSAVE state");
  FLURRY_TRY_CTX(vcpu.SetRegs(state.regs), "restoring registers");
  return {};
}

}  // namespace flurry
