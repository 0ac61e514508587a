// KvmBackend: the guest runs at CPL3 in a KVM VM; syscalls exit through the doorbell written
// by the LSTAR gate, exceptions through port writes (docs/abi.md). Each lane is a vCPU: while
// one lane exists the run thread runs it itself; with several, each runs on a thread of its own
// and Run() waits for any to stop (kvm_lanes.cc, docs/design.md "Threads").
//
// Owner: the Vm. Thread: the run thread; Interrupt() from any thread; the lane threads run
// KVM_RUN only (KvmLane says who owns what when).
#pragma once

#include <array>
#include <atomic>
#include <memory>
#include <optional>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/page_tables.h"
#include "backend/backend.h"
#include "backend/kvm/kvm_lane.h"
#include "kvm/kvm_system.h"
#include "kvm/kvm_vcpu.h"
#include "kvm/kvm_vm.h"

namespace flurry {

// What a KVM backend can make before the guest's layout is known (PrepareBackend): the VM
// and vCPU 0 set up for process mode, and the guest memory of an expected size in memory
// slot 0 (a memory slot is the costly part of the VM: KVM allocates its reverse maps).
class KvmPrepared final : public PreparedBackend {
 public:
  KvmPrepared(KvmSystem system, KvmVm vm, KvmVcpu vcpu, uint64_t xcr0)
      : system(std::move(system)), vm(std::move(vm)), vcpu(std::move(vcpu)), xcr0(xcr0) {}
  KvmSystem system;
  KvmVm vm;
  KvmVcpu vcpu;
  uint64_t xcr0;
  std::optional<GuestMemory> memory;  // in slot 0, untouched
};

class KvmBackend final : public Backend {
 public:
  // ram_bytes 0: no memory made ahead.
  static Result<std::unique_ptr<KvmPrepared>> Prepare(uint64_t ram_bytes = 0);
  // With `prepared`: its VM and vCPU, and its memory if it is of the layout's size (else the
  // guest's memory replaces it).
  static Result<std::unique_ptr<KvmBackend>> Create(
      const GuestLayout& layout, std::unique_ptr<KvmPrepared> prepared = nullptr);

  const char* name() const override { return "kvm"; }
  GuestMemory& memory() override { return memory_; }
  Result<void> LoadCpu(const x86::UserCpuState& state) override;
  Result<GuestStop> Run() override;
  x86::UserRegs& regs() override { return lane().regs; }
  void CompleteSyscall(uint64_t rax) override;
  void MarkSegmentBasesDirty() override { lane().segment_bases_dirty = true; }
  Result<x86::UserCpuState> CaptureCpu() override;
  Result<void> Protect(const ProtectionMap& protections, uint64_t start, uint64_t length) override;
  void Interrupt() override;
  Result<TscInfo> Tsc() override;
  Result<UniqueFd> TakeUserfault() override { return OpenUserfault(); }
  uint64_t ram_host_base() override { return reinterpret_cast<uint64_t>(memory_.host_base()); }
  Result<HugeStage> MakeHugeStage() override { return LocalHugeStage(); }
  Result<void> PrepareFork(bool) override;
  void AfterForkInParent(bool) override {}
  Result<void> AfterForkInChild() override { return {}; }
  Result<void> BecomeClone(const x86::UserCpuState& state) override;

  // Lanes (kvm_lanes.cc).
  int max_lanes() const override { return max_lanes_; }
  void InterruptLane(int lane) override;
  void InterruptAimed(int lane) override;
  int64_t LaneStoppedNs(int lane) const override;
  bool LaneExists(int lane) const override;
  Result<int> AddLane() override;
  Result<void> EndOtherLanes() override;
  void Select(int lane) override { selected_ = lane; }
  int selected() const override { return selected_; }
  void SetIdle(int lane) override { lanes_[static_cast<size_t>(lane)].active = false; }
  bool LaneRunning(int lane) const override;
  Result<std::optional<GuestStop>> WaitRunning() override;

  ~KvmBackend() override;

 private:
  KvmBackend(GuestMemory memory, const GuestLayout& layout)
      : memory_(std::move(memory)), layout_(layout), page_tables_(layout.ram_size) {}
  KvmLane& lane() { return lanes_[static_cast<size_t>(selected_)]; }
  const KvmLane& lane() const { return lanes_[static_cast<size_t>(selected_)]; }
  KvmVcpu& vcpu() { return *lane().vcpu; }
  // KVM_RUN on `lane`'s vCPU, timing the stop before it (KvmLane::stopped_ns).
  static Result<uint32_t> RunVcpu(KvmLane& lane);
  // A fresh KVM VM around memory_ with the selected lane's vCPU (creation, and clones: KVM
  // objects do not survive fork()).
  // With `prepared`: its VM and vCPU 0 (and with `slot_holds_memory`, its slot 0 holds
  // memory_ already).
  Result<void> BuildVm(std::unique_ptr<KvmPrepared> prepared = nullptr,
                       bool slot_holds_memory = false);
  // Makes lane `index`'s vCPU (CPUID, XCR0, registers for user mode with its own TSS).
  // `set_up` false: the lane's vCPU was set up already (KvmPrepared's): only marks it ready.
  Result<void> MakeVcpu(int index, bool set_up = true);
  Result<void> ApplySegmentBases(KvmLane& lane);
  // Whether the selected lane's vCPU stands at CPL0 (in the gate or an exception stub), asking
  // KVM only when its last exit does not tell.
  Result<bool> AtCpl0();
  // The user-visible view of the selected lane's registers (inside the syscall gate: as after
  // sysret).
  x86::UserRegs ToUser(const kvm_regs& k) const;
  // Why the selected lane's KVM_RUN returned, as a stop (nullopt: run it again).
  Result<std::optional<GuestStop>> DecodeExit(const Result<uint32_t>& reason);
  Result<GuestStop> Fault(int signal, const char* what);
  Result<GuestStop> Exception(int vector);

  // Several lanes (kvm_lanes.cc).
  Result<GuestStop> RunLanes();
  // Waits until an active lane's stop is there (nullopt: none runs), selects it, decodes it.
  // `through_system_code` (WaitRunning): a kick that stopped a lane at the entry of the gate or
  // an exception stub lets it run on to the stop its next instruction makes.
  Result<std::optional<GuestStop>> WaitForStop(bool through_system_code = false);
  void StartLaneThread(int index);
  void StopLaneThreads();
  void Resume(KvmLane& lane);
  // Stops one running lane (any thread); false if none ran.
  bool KickRunningLane();
  static void Kick(KvmLane& lane);
  // One lane (any thread): its next KVM_RUN returns at once.
  void InterruptDirectLane();
  int existing_lanes() const;
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
  std::array<KvmLane, x86::kMaxVcpus> lanes_;
  int max_lanes_ = 1;
  int selected_ = 0;
  // Several lanes exist: each runs on its lane thread (else the run thread runs the one lane).
  std::atomic<bool> threaded_{false};
  // One lane: its kvm_run, for Interrupt() from other threads.
  std::atomic<kvm_run*> direct_run_area_{nullptr};
  // Interrupt() found no lane running: the next lane resumed stops at once.
  std::atomic<bool> interrupt_next_{false};
  std::atomic<uint32_t> stops_{0};  // bumped by a lane thread at each stop (futex word)
  size_t next_scan_ = 0;            // round robin over the lanes' stops
  uint64_t xcr0_ = 0;
  // Whether `syscall` enters the gate at CPL0 (hardware KVM) or stays at CPL3 (PVM); learned
  // at the first syscall exit.
  enum class GateMode { kUnknown, kRaisesCpl, kStaysAtCpl3 } gate_mode_ = GateMode::kUnknown;
};

}  // namespace flurry
