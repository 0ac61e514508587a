// Vm: one process-mode microVM — its execution backend (KVM or seccomp: backend/backend.h),
// the VMM-side guest state, the syscall layer, VM fork — and the loop that runs it.
//
// Ownership: a Vm owns everything it holds. Threads: Create() and Run() on the caller's
// thread, which becomes the run thread; Control() and RequestStop() from any other thread (the
// API server, the watchdog).
#pragma once

#include <pthread.h>

#include <atomic>
#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>

#include "backend/backend.h"
#include "base/error.h"
#include "fork/clone_directory.h"
#include "fork/fork_controller.h"
#include "guest/guest_state.h"
#include "guest/syscall.h"
#include "vmm/guest_exit.h"
#include "vmm/vdso.h"
#include "vmm/vm_config.h"
#include "vmm/vm_control.h"

namespace flurry {

class Vm : public ForkHost {
 public:
  // Builds the VM: loads config.program, lays out memory, sets the CPU at the entry point.
  static Result<std::unique_ptr<Vm>> Create(const VmConfig& config);

  // Restores a snapshot written by ControlRequest::kSnapshot (flurry restore DIR).
  static Result<std::unique_ptr<Vm>> Restore(const std::string& directory, const VmConfig& config);

  // Runs the guest until it exits, faults or is stopped. Call on one thread only.
  Result<GuestExit> Run();

  // Any thread but the run thread: carries out `request` on the run thread at the next point
  // where the guest is stopped, and returns the reply.
  ControlReply Control(const ControlRequest& request);

  // Makes Run() return kTimedOut soon (any thread).
  void RequestStop();

  GuestState& state() { return state_; }
  GuestMemory& memory() { return backend_->memory(); }
  const char* backend_name() const { return backend_->name(); }

  // ForkHost.
  Result<CloneState> CaptureResumeState() override;
  Result<CloneState> CaptureCurrentState() override;
  Result<void> BecomeClone(int32_t id, const CloneState& state) override;
  Result<void> PrepareFork(bool tied_to_parent) override {
    return backend_->PrepareFork(tied_to_parent);
  }
  void AfterForkInParent(bool child_exists) override { backend_->AfterForkInParent(child_exists); }
  Result<void> AfterForkInChild() override { return backend_->AfterForkInChild(); }
  void ReleaseGuest() override { backend_.reset(); }

 private:
  Vm(std::unique_ptr<Backend> backend, GuestState state, ForkController fork,
     bool clone_output_prefix);
  // Starts the vDSO clock from the backend's TSC.
  Result<void> StartClock();

  // In a clone: report how the guest ended to the parent's VMM and exit the process.
  [[noreturn]] void EndClone(const GuestExit& exit);

  Result<GuestExit> RunLoop();
  // On the run thread: serves queued control requests; blocks while paused.
  Result<void> ServeControl();
  ControlReply Execute(const ControlRequest& request);
  Result<ControlReply> WriteSnapshot(const std::string& directory);
  // Captures the CPU with the FS/GS bases the syscall layer last set.
  Result<x86::UserCpuState> CaptureCpu();
  // A syscall stop. Returns a GuestExit when the guest is done, nullopt to keep running.
  Result<std::optional<GuestExit>> HandleSyscall();
  // Applies FS/GS bases a syscall set (arch_prctl) to the backend.
  void ApplySegmentBases();
  // Wakes the run thread out of a blocking host call or a wait for the guest (any thread).
  void Kick();

  std::unique_ptr<Backend> backend_;
  GuestState state_;
  SyscallTable syscalls_;
  GuestClock clock_;
  ForkController fork_;
  bool clone_output_prefix_ = true;
  std::optional<CloneDirectory> clone_directory_;  // a clone's private view of a writable --dir
  // Set when BecomeClone loaded the CPU during a syscall: its registers are already final.
  bool cpu_replaced_ = false;
  // A syscall handler is running (and may block): control requests served now see the guest
  // as about to make that syscall again (a snapshot or clone restarts it).
  bool in_syscall_ = false;
  uint64_t syscall_nr_ = 0;
  // SyscallContext::serve_interrupt: serves control requests from inside a blocking handler.
  static bool ServeDuringSyscall(void* vm);
  std::atomic<bool> stop_requested_{false};
  uint64_t syscall_count_ = 0;

  // Control requests (Control() -> run thread). Guarded by control_mutex_.
  struct PendingControl {
    ControlRequest request;
    ControlReply reply;
    bool done = false;
  };
  std::mutex control_mutex_;
  std::condition_variable control_cv_;
  std::deque<PendingControl*> control_queue_;
  bool paused_ = false;  // run thread only
  bool exited_ = false;  // guarded by control_mutex_
  std::atomic<pthread_t> run_thread_{};
  std::atomic<bool> run_thread_known_{false};
};

}  // namespace flurry
