// KvmVcpu: one virtual CPU — its fd and its shared kvm_run area. Move-only.
//
// Thread: created on the main thread, then used only by its vCPU thread, except
// RequestImmediateExit(), which any thread may call to kick the vCPU out of KVM_RUN.
// Registers travel through the kvm_run "sync regs" area (KVM_CAP_SYNC_REGS): KVM fills it on
// every exit and reads back what is marked dirty on the next KVM_RUN, so the hot path (a guest
// syscall) needs one ioctl, not three.
#pragma once

#include <linux/kvm.h>

#include <atomic>
#include <cstdint>
#include <span>

#include "base/error.h"
#include "base/mapping.h"
#include "base/unique_fd.h"
#include "kvm/kvm_abi.h"
#include "kvm/kvm_system.h"
#include "kvm/kvm_vm.h"

namespace flurry {

class KvmVcpu {
 public:
  static Result<KvmVcpu> Create(const KvmSystem& system, const KvmVm& vm, int index);

  // Enters the guest until the next exit. Returns the exit reason, or EINTR as an error with
  // code EINTR when a signal or RequestImmediateExit() interrupted it.
  Result<uint32_t> Run();
  kvm_run& run() const { return *reinterpret_cast<kvm_run*>(run_area_.data()); }

  // General-purpose registers as of the last exit (sync regs); writes mark them dirty so the
  // next Run() loads them.
  kvm_regs& regs() const { return run().s.regs.regs; }
  void MarkRegsDirty() const { run().kvm_dirty_regs |= KVM_SYNC_X86_REGS; }

  // Makes the next KVM_RUN of the vCPU whose kvm_run this is return at once (any thread; a
  // vCPU already in KVM_RUN also needs a signal). Sequentially consistent, so a kicker that
  // stores it and then reads whether a thread runs the vCPU pairs with that thread's store.
  static void RequestImmediateExit(kvm_run& run);
  // Drops a request (the run thread, after the exit it caused).
  void ClearImmediateExit() const;

  Result<kvm_regs> GetRegs() const;
  Result<void> SetRegs(const kvm_regs& regs) const;
  Result<kvm_sregs> GetSregs() const;
  Result<void> SetSregs(const kvm_sregs& sregs) const;
  Result<void> SetMsrs(std::span<const kvm_msr_entry> msrs) const;
  Result<void> GetMsrs(std::span<kvm_msr_entry> msrs) const;
  Result<void> SetCpuid(std::span<const kvm_cpuid_entry2> entries) const;
  Result<void> SetXcr0(uint64_t value) const;
  Result<kvm_abi::Xsave> GetXsave() const;
  Result<void> SetXsave(const kvm_abi::Xsave& xsave) const;

  int fd() const { return fd_.get(); }

 private:
  KvmVcpu(UniqueFd fd, Mapping run_area) : fd_(std::move(fd)), run_area_(std::move(run_area)) {}
  UniqueFd fd_;
  Mapping run_area_;
};

}  // namespace flurry
