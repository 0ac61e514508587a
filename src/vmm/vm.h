// Vm: one process-mode microVM — the KVM VM, its single vCPU, guest RAM, and the VMM-side
// guest state — and the loop that runs it.
//
// Ownership: a Vm owns everything it holds. Threads: Create() and Run() on the caller's
// thread, which becomes the vCPU thread; RequestStop() from any thread (the watchdog).
#pragma once

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>

#include "base/error.h"
#include "fork/clone_directory.h"
#include "fork/fork_controller.h"
#include "guest/guest_state.h"
#include "guest/syscall.h"
#include "kvm/kvm_system.h"
#include "kvm/kvm_vcpu.h"
#include "kvm/kvm_vm.h"
#include "memory/guest_memory.h"
#include "vmm/guest_exit.h"
#include "vmm/vdso.h"
#include "vmm/vm_config.h"
#include "vmm/vm_control.h"

namespace flurry {

class Vm : public ForkHost {
 public:
  // Builds the VM: loads config.program, lays out memory, sets up the vCPU at the entry point.
  static Result<std::unique_ptr<Vm>> Create(const VmConfig& config);

  // Restores a snapshot written by ControlRequest::kSnapshot (flurry restore DIR).
  static Result<std::unique_ptr<Vm>> Restore(const std::string& directory, const VmConfig& config);

  // Runs the guest until it exits, faults or is stopped. Call on one thread only.
  Result<GuestExit> Run();

  // Any thread but the vCPU thread: carries out `request` on the vCPU thread at the next point
  // where the guest is stopped between instructions, and returns the reply.
  ControlReply Control(const ControlRequest& request);

  // Makes Run() return kTimedOut soon (any thread; async-signal-unsafe parts excluded).
  void RequestStop();

  GuestState& state() { return state_; }
  GuestMemory& memory() { return memory_; }

  // ForkHost.
  Result<CloneState> CaptureResumeState() override;
  Result<CloneState> CaptureCurrentState() override;
  Result<void> BecomeClone(int32_t id, const CloneState& state) override;

 private:
  Vm(KvmSystem system, KvmVm vm, KvmVcpu vcpu, GuestMemory memory, GuestState state,
     ForkController fork, bool clone_output_prefix);

  // The guest's registers as they should be when the current syscall returns `rax`.
  kvm_regs ResumeRegs(uint64_t rax) const;
  // In a clone: report how the guest ended to the parent's VMM and exit the process.
  [[noreturn]] void EndClone(const GuestExit& exit);

  Result<GuestExit> RunLoop();
  // On the vCPU thread: serves queued control requests; blocks while paused. Returns true if
  // this process just became a clone (host-initiated clone).
  Result<void> ServeControl();
  ControlReply Execute(const ControlRequest& request);
  Result<ControlReply> WriteSnapshot(const std::string& directory);
  // Makes KVM apply registers written through sync regs, so the vCPU's state can be read.
  Result<void> SettleRegisters();
  // Exit handlers. Each returns a GuestExit when the guest is done, nullopt to keep running.
  Result<std::optional<GuestExit>> HandleSyscall();
  Result<GuestExit> HandleException(int vector);
  Result<void> ApplySegmentBases();
  std::string DescribeFailure(const char* what);

  KvmSystem system_;
  KvmVm kvm_vm_;
  KvmVcpu vcpu_;
  GuestMemory memory_;
  GuestState state_;
  SyscallTable syscalls_;
  GuestClock clock_;
  ForkController fork_;
  bool clone_output_prefix_ = true;
  std::optional<CloneDirectory> clone_directory_;  // a clone's private view of a writable --dir
  // Set when BecomeClone replaced the vCPU during a syscall: its registers are already final.
  bool vcpu_replaced_ = false;
  // Whether `syscall` enters the gate at CPL0 (hardware KVM) or stays at CPL3 (PVM); learned
  // at the first syscall exit.
  enum class GateMode { kUnknown, kRaisesCpl, kStaysAtCpl3 } gate_mode_ = GateMode::kUnknown;
  std::atomic<bool> stop_requested_{false};
  uint64_t syscall_count_ = 0;

  // Control requests (Control() -> vCPU thread). Guarded by control_mutex_.
  struct PendingControl {
    ControlRequest request;
    ControlReply reply;
    bool done = false;
  };
  std::mutex control_mutex_;
  std::condition_variable control_cv_;
  std::deque<PendingControl*> control_queue_;
  bool paused_ = false;  // vCPU thread only
  bool exited_ = false;  // guarded by control_mutex_
  std::atomic<pthread_t> vcpu_thread_{};
  std::atomic<bool> vcpu_thread_known_{false};
};

}  // namespace flurry
