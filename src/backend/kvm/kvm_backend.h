// KvmBackend: the guest runs at CPL3 in a KVM VM with one vCPU; syscalls exit through the
// doorbell written by the LSTAR gate, exceptions through port writes (docs/abi.md).
//
// Owner: the Vm. Thread: the run thread; Interrupt() from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <optional>

#include "arch/x86_64/page_tables.h"
#include "backend/backend.h"
#include "kvm/kvm_system.h"
#include "kvm/kvm_vcpu.h"
#include "kvm/kvm_vm.h"

namespace flurry {

class KvmBackend final : public Backend {
 public:
  static Result<std::unique_ptr<KvmBackend>> Create(const GuestLayout& layout);

  const char* name() const override { return "kvm"; }
  GuestMemory& memory() override { return memory_; }
  Result<void> LoadCpu(const x86::UserCpuState& state) override;
  Result<GuestStop> Run() override;
  x86::UserRegs& regs() override { return regs_; }
  void CompleteSyscall(uint64_t rax) override;
  void MarkSegmentBasesDirty() override { segment_bases_dirty_ = true; }
  Result<x86::UserCpuState> CaptureCpu() override;
  Result<void> Protect(const ProtectionMap& protections, uint64_t start, uint64_t length) override;
  void Interrupt() override;
  Result<TscInfo> Tsc() override;
  Result<UniqueFd> TakeUserfault() override { return OpenUserfault(); }
  uint64_t ram_host_base() override { return reinterpret_cast<uint64_t>(memory_.host_base()); }
  Result<HugeStage> MakeHugeStage() override { return LocalHugeStage(); }
  Result<void> PrepareFork(bool) override { return {}; }
  void AfterForkInParent(bool) override {}
  Result<void> AfterForkInChild() override { return {}; }
  Result<void> BecomeClone(const x86::UserCpuState& state) override;

 private:
  KvmBackend(GuestMemory memory, const GuestLayout& layout)
      : memory_(std::move(memory)), layout_(layout), page_tables_(layout.ram_size) {}
  // A fresh KVM VM and vCPU around memory_ (creation, and clones: KVM objects do not survive
  // fork()).
  Result<void> BuildVm();
  Result<void> ApplySegmentBases();
  // The user-visible view of the vCPU's registers (inside the syscall gate: as after sysret).
  x86::UserRegs ToUser(const kvm_regs& k) const;
  Result<GuestStop> Fault(int signal, const char* what);
  Result<GuestStop> Exception(int vector);
  // Drops the vCPU's cached translations after page-table edits: a changed CR3 makes KVM
  // reload its MMU root and flush the guest's TLB. Where KVM shadows the guest's page tables
  // (no EPT/NPT, or PVM), it also drops KVM's shadow pages, which the VMM's own writes to the
  // tables do not invalidate.
  Result<void> FlushTlb();

  GuestMemory memory_;
  GuestLayout layout_;
  x86::UserPageTables page_tables_;
  bool tlb_stale_ = false;  // page tables edited since the guest last ran
  // KVM shadows the guest's page tables here (ShadowPaging()): learned at creation.
  bool shadow_paging_ = false;
  std::optional<KvmSystem> system_;
  std::optional<KvmVm> vm_;
  std::optional<KvmVcpu> vcpu_;
  std::atomic<KvmVcpu*> kick_target_{nullptr};  // for Interrupt() from other threads
  x86::UserRegs regs_;
  uint64_t xcr0_ = 0;
  bool segment_bases_dirty_ = false;
  // Whether `syscall` enters the gate at CPL0 (hardware KVM) or stays at CPL3 (PVM); learned
  // at the first syscall exit.
  enum class GateMode { kUnknown, kRaisesCpl, kStaysAtCpl3 } gate_mode_ = GateMode::kUnknown;
};

}  // namespace flurry
