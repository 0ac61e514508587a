// Vm: one process-mode microVM — its execution backend (KVM or seccomp: backend/backend.h),
// the VMM-side guest state, the syscall layer, VM fork — and the loop that runs it.
//
// Ownership: a Vm owns everything it holds. Threads: Create() and Run() on the caller's
// thread, which becomes the run thread; Control() and RequestStop() from any other thread (the
// API server, the watchdog).
#pragma once

#include <pthread.h>

#include <array>
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
#include "guest/lazy_files.h"
#include "guest/signal_frame.h"
#include "guest/syscall.h"
#include "memory/page_source.h"
#include "snapshot/pipe_contents.h"
#include "snapshot/vm_descriptor.h"
#include "vmm/alarm_thread.h"
#include "vmm/guest_exit.h"
#include "vmm/process_listener.h"
#include "vmm/thread_slice.h"
#include "vmm/vdso.h"
#include "vmm/vm_config.h"
#include "vmm/vm_control.h"

namespace flurry {

struct GatherMessage;

// Gives the backend every user page's protection from `map` (a VM made or restored: the
// backend starts with all of user memory accessible).
Result<void> ProtectUserMemory(Backend& backend, const MemoryMap& map);

class Vm : public ForkHost {
 public:
  // Builds the VM: loads config.program, lays out memory, sets the CPU at the entry point.
  static Result<std::unique_ptr<Vm>> Create(const VmConfig& config);

  // Restores a snapshot written by ControlRequest::kSnapshot (flurry restore DIR).
  static Result<std::unique_ptr<Vm>> Restore(const std::string& directory, const VmConfig& config);
  // Becomes the VM `descriptor` describes, its memory from `source`: copied before the guest
  // starts, or installed as it is touched with config.memory_on_demand (vm_restore.cc).
  // A clone of a VM on another host (config.clone_of) whose parent had a --dir gets a copy of
  // it in config.dir, its files fetched from `files` as they are opened (guest/lazy_files.h).
  // `prepared`: backend parts made while the VMM waited for its clone (flurry clone-vmm).
  // What a process of a VM of several processes restored from a snapshot shares with the
  // VM's other processes (vm_restore_processes.cc).
  struct SharedWithProcesses {
    const PipeSet* pipes = nullptr;   // the VM's pipes
    int64_t monotonic_offset_ns = 0;  // the VM's clock
    ForkController fork;              // the VM's clone family
  };
  static Result<std::unique_ptr<Vm>> RestoreFrom(
      const VmDescriptor& descriptor, std::unique_ptr<PageSource> source, const VmConfig& config,
      std::unique_ptr<FileSource> files = nullptr,
      std::unique_ptr<PreparedBackend> prepared = nullptr,
      std::optional<SharedWithProcesses> shared = std::nullopt);
  ~Vm() override;

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
  Result<ServedMemory> ServeForRemoteClones(const CloneState& state, const std::string& bind,
                                            bool push_pages) override;
  Result<void> PrepareFork(bool tied_to_parent) override {
    // The backend forks with one lane: the others' threads stop and are recorded, their
    // lanes end (made again when the threads next run).
    FLURRY_TRY_CTX(OneLaneForFork(), "before forking the VM");
    alarm_.Stop();  // a thread does not cross fork(); the run loop starts it again
    listener_.Stop();
    alarm_set_for_ = -1;
    // A copy of the VM must not depend on this process serving its memory's faults, nor on
    // its connection for files still to be fetched.
    FLURRY_TRY_CTX(backend_->memory().Materialize(), "before forking the VM");
    if (const HostDir* root = state_.fds.root()) {
      FLURRY_TRY_CTX(root->FetchPendingFiles(), "before forking the VM");
    }
    return backend_->PrepareFork(tied_to_parent);
  }
  void AfterForkInParent(bool child_exists) override { backend_->AfterForkInParent(child_exists); }
  Result<void> AfterForkInChild() override {
    FLURRY_TRY(backend_->AfterForkInChild());
    KeepOnlyCurrentLane();  // the forked copy has the lane that forked
    return {};
  }
  void ReleaseGuest() override {
    alarm_.Stop();  // it kicks the backend
    listener_.Stop();
    backend_.reset();
  }
  // Cloning a VM of several processes (vm_gather.cc; docs/design.md, "Cloning a VM of several
  // processes").
  bool HasOtherProcesses() const override { return processes_.Count() > 1; }
  void ForgetGuestPipes() override { state_.fds.ClosePipes(); }
  Result<void> GatherOtherProcesses() override;
  // GatherOtherProcesses for a snapshot (a writable --dir is no obstacle there).
  Result<void> GatherProcesses();
  void ForgetGathered() override { gathering_.reset(); }
  Result<void> BeforeSpawn(int32_t id, bool detached) override;
  void AfterSpawn() override;

 private:
  Vm(std::unique_ptr<Backend> backend, GuestState state, ForkController fork,
     bool clone_output_prefix);
  // Starts the vDSO clock from the backend's TSC.
  Result<void> StartClock();
  // Memory on demand from `source` for a VM restored from `descriptor`, as `config` says
  // (prefetch, readahead, avoidance).
  Result<void> AttachOnDemandMemory(const VmDescriptor& descriptor,
                                    std::unique_ptr<PageSource> source, const VmConfig& config);
  // Any thread: guest memory cannot be supplied (a page could not be fetched), or the VMM
  // lost track of the guest's threads (a lane that could not be stopped): the VM ends with
  // this error.
  void FailMemory(const Error& error);

  // In a clone: report how the guest ended to the parent's VMM and exit the process.
  [[noreturn]] void EndClone(const GuestExit& exit);

  Result<GuestExit> RunLoop();
  // On the run thread: serves queued control requests; blocks while paused.
  Result<void> ServeControl();
  // Whether a control request waits (any thread).
  bool ControlPending();
  ControlReply Execute(const ControlRequest& request);
  Result<ControlReply> WriteSnapshot(const std::string& directory);
  // The descriptor of the VM as it stands (stopped at a control request).
  Result<VmDescriptor> CaptureDescriptor();
  // Forks a page server process holding the VM as it stands (vm_serve.cc); `multicast`: it
  // pushes its page replies to every restoring VM too (docs/protocols/page_push.md).
  Result<ControlReply> ServeSnapshot(const std::string& address, bool multicast);
  // Forks a page server process serving `descriptor` and the guest memory as it stands.
  Result<ServedMemory> ServeDescriptor(const VmDescriptor& descriptor, const std::string& address,
                                       bool push_pages = false);
  // Captures the CPU with the FS/GS bases the syscall layer last set.
  Result<x86::UserCpuState> CaptureCpu();
  // A syscall stop. Returns a GuestExit when the guest is done, nullopt to keep running.
  Result<std::optional<GuestExit>> HandleSyscall();
  // Hands the protections the last syscall changed to the backend.
  Result<void> ApplyProtectionChanges();
  // Signals (vm_signals.cc). After a syscall whose result stands in regs().rax: delivers
  // what is pending and not blocked — a handler's frame (then the CPU is loaded and the
  // syscall must not be completed), a default action, or nothing.
  struct SignalDelivery {
    std::optional<GuestExit> exit;  // the guest died of a signal
    bool handler_entered = false;   // the CPU now stands at a handler
  };
  Result<SignalDelivery> DeliverSignals();
  // A fault stop: runs the guest's handler for it, or ends the guest as Linux would.
  Result<std::optional<GuestExit>> HandleFault(const GuestStop& stop);
  // rt_sigreturn: the CPU and mask as the handler's frame holds them.
  Result<std::optional<GuestExit>> SigReturn();
  // Raises SIGALRM if the guest's interval timer is due (and arms its next period).
  void CheckTimers();
  // Gives the alarm thread the earlier of the interval timer's deadline and
  // retry_stop_at_, if that changed.
  void SyncAlarm();
  // After a syscall interrupted by a signal (EINTR): whether it is made again after the
  // handler (SA_RESTART, Linux's list of syscalls never restarted) or at once (no handler).
  bool RestartsAfter(uint64_t nr, int signal) const;
  // Pushes the frame of `signal`'s handler and loads the CPU there; a frame that cannot be
  // written ends the guest with SIGSEGV (the returned exit).
  Result<std::optional<GuestExit>> EnterHandler(const GuestSiginfo& info,
                                                const FaultContext& fault);
  // Applies FS/GS bases a syscall set (arch_prctl) to the backend.
  void ApplySegmentBases();
  // Wakes the run thread out of a blocking host call or a wait for the guest (any thread).
  void Kick();
  // The alarm's kick (alarm thread): stops the lane alarm_lane_ names, else as Kick().
  void KickForAlarm();
  // At a stop of `lane`: if its last switch was a sample (ScheduleThreads), feeds its cost to
  // thread_slice_.
  void NoteSwitchCost(int lane);

  // Processes (vm_process.cc): each guest process is a VMM process; processes_ is what they
  // share. Makes the table of a VM (its first process) if there is none, and listens.
  Result<void> StartProcesses();
  // fork/vfork/clone of a process, as state_.threads.fork says: in the parent returns the
  // child's pid; in the child (its CPU loaded, RAX 0) returns nullopt.
  Result<std::optional<int32_t>> ForkGuestProcess(const ProcessFork& request);
  // In a new child process: becomes process `pid` in slot `slot`, resuming with `cpu`.
  Result<void> BecomeGuestChild(int slot, int32_t pid, const x86::UserCpuState& cpu,
                                const ProcessFork& request);
  // A child process ends: its parent learns how (wait4), and this VMM exits.
  [[noreturn]] void EndGuestProcess(const GuestExit& exit);
  // Signals other processes sent this one become pending.
  void TakeProcessSignals();
  // Cloning a VM of several processes (vm_gather.cc). Another process clones the VM: this one
  // stops, forks the process that makes its copies for the clones, and runs on once every
  // process has stopped. In a copy (a process of a clone) returns with the CPU loaded
  // (cpu_replaced_).
  // Returns true in a copy.
  Result<bool> JoinGathering(const ProcessTable::Gathering& gathering);
  // In the cloning process's copy in a clone: the other copies of the clone register; the
  // clone's process table and pipes are made and handed to them. Returns the pipes.
  Result<PipeSet> AssembleClone();
  // In a copy of another process for clone `id`: registers with the rendezvous of `owner`
  // (the snapshot process that asked for it) and becomes that process of the clone.
  Result<void> BecomeCloneCopy(int32_t id, int32_t owner, const CloneState& state);
  // Snapshots of a VM of several processes (vm_snapshot_processes.cc). In init, with every
  // other process gathered (their copiers hold them as they were): each copier writes its
  // process's descriptor and memory into a subdirectory of `directory` (process-PID), with
  // the VM's clock `clock`. Returns the bytes written.
  Result<ControlReply> WriteOtherProcesses(const std::string& directory, const ClockCapture& clock);
  // In a copier: writes its process's snapshot (the state captured at the gathering) into
  // `directory`; returns the memory bytes written.
  Result<uint64_t> WriteCopySnapshot(const std::string& directory, const CloneState& state,
                                     const ClockCapture& clock);
  // Writes `descriptor` and the guest memory its page map lists into `directory`.
  Result<ControlReply> WriteSnapshotFiles(const std::string& directory,
                                          const VmDescriptor& descriptor);
  // Restoring one (vm_restore_processes.cc): init's descriptor `d` read from `directory`;
  // every other running process is restored in a VMM forked for it, connected to the others
  // as the processes of a clone are (a process table and the pipes). Returns init's Vm.
  static Result<std::unique_ptr<Vm>> RestoreProcesses(const std::string& directory,
                                                      const VmDescriptor& d,
                                                      const VmConfig& config);
  // In the VMM forked for process `d` (directory `directory`) of a VM being restored by init's
  // VMM `owner`: joins the VM and runs the process; never returns.
  [[noreturn]] static void RunRestoredProcess(const std::string& directory, const VmDescriptor& d,
                                              const VmConfig& config, pid_t owner,
                                              ForkController fork);
  // A SETUP (fork/vm_gathering.h) for the other processes of a clone or of a restored VM:
  // one new pipe per record, with its bytes, kept in the returned set until the message is
  // sent; the message (from `host_pid`) names them, and `fds` is what it carries: the table
  // (`table_memfd`), then the read and the write end of each pipe.
  static Result<PipeSet> MakeSetup(int table_memfd, const std::vector<PipeRecord>& records,
                                   int32_t host_pid, GatherMessage* setup, std::vector<int>* fds);
  // The part of becoming a clone common to every process of it (vm_clone.cc).
  Result<void> BecomeCloneVm(int32_t id, const CloneState& state, const PipeSet* pipes);
  // execve/execveat (vm_exec.cc): the new program stands loaded (cpu_replaced_), or the call
  // failed (*failure holds the errno), or the process ended (past the point of no return).
  Result<std::optional<GuestExit>> Exec(const SyscallArgs& args, SyscallResult* failure);

  // Threads (vm_threads.cc): the running one stands in the backend and state_; the others in
  // state_.threads.
  // How often threads waiting for host fds are polled while other threads run.
  static constexpr int64_t kFdPollNs = 5'000'000;
  // The running thread as a GuestThread (its CPU captured).
  Result<GuestThread> SaveRunningThread();
  // Makes `thread` the running one (its syscall's result in RAX) and delivers its signals.
  Result<std::optional<GuestExit>> LoadThread(GuestThread thread);
  // A signal is to be delivered to a thread about to make its partial write again
  // (ThreadTable::resumed): the write returns the count it wrote instead, as Linux's
  // pipe_write does when a signal comes, and the handler runs after it.
  Result<void> EndResumedWrite();
  // clone made `spawn`: a thread with the caller's CPU state `cpu`, runnable.
  void SpawnThread(const ThreadSpawn& spawn, x86::UserCpuState cpu);
  // Ends the waits that are over: deadlines passed, host fds ready (the thread makes its
  // syscall again), and pending signals that interrupt a parked thread (EINTR) or that it
  // waits for; process signals in `taken_by_running` are the running thread's to take. Data
  // and a poll() that does not wait: safe at any stop.
  void WakeWaitingThreads(uint64_t taken_by_running);
  // The running thread is parked or gone: runs the next runnable thread, waiting (serving
  // control requests and timers) until one is.
  Result<std::optional<GuestExit>> RunAnotherThread();
  // Parks the running thread in syscall `syscall_nr` as `block` says; runs another.
  Result<std::optional<GuestExit>> ParkRunningThread(const ThreadBlock& block, uint64_t syscall_nr);
  // At a stop where the running thread's registers are final: wakes threads whose wait ended
  // and, when its slice is over (or it yields) and another can run, switches to that one.
  // `at_kick`: at a kInterrupted stop, where a switch is a sample of what switches cost (at a
  // syscall's stop, the stop would count the syscall's service too).
  Result<std::optional<GuestExit>> ScheduleThreads(bool yield, bool at_kick = false);

  // Lanes (vm_lanes.cc): threads running in parallel, each on a lane of the backend. The
  // thread in state_ is lane_'s (none while lane_idle_); a thread on another lane is a
  // GuestThread in state_.threads with `lane` set, holding its per-thread data.
  static constexpr int kMaxLanes = 64;  // sched_getaffinity's one mask word
  // How many lanes the VM may use: `wanted`, or (0) the host's CPUs; at most the backend's.
  void SetLanes(int wanted);
  // The running thread's per-thread data (not its CPU) as a GuestThread, and back.
  GuestThread RunningThreadData();
  void PutRunningThreadData(GuestThread& thread);
  // The running thread goes on running on lane_; its data moves to state_.threads.
  void StashRunningThread();
  // After Run() returned a stop of `lane`: its thread becomes the running one.
  void SwitchToLane(int lane);
  // lane_ has no thread to run: it stays stopped until it gets one.
  void IdleLane();
  // A lane without a thread; -1: none. Where fewer than lanes_wanted_ exist, makes the rest
  // in one batch (a backend adds lanes only before any of them has run).
  int FreeLane();
  // Runnable threads go to lanes without a thread.
  Result<std::optional<GuestExit>> FillLanes();
  // Stops every other lane; each one's thread becomes a plain runnable thread with its CPU
  // captured (a syscall it stopped at is made again when it runs): before a snapshot, a
  // clone, a pause or an execve, which need every thread's state.
  Result<void> GatherLanes();
  Result<void> GatherOtherLanes(int home);
  // Whether a lane other than lane_ has a thread.
  bool OtherLanesBusy() const;
  // Before a fork of the backend: every other lane's thread stopped and recorded, the running
  // thread moved to lane 0 (the stub's main thread, which forks), the other lanes ended.
  Result<void> OneLaneForFork();
  // In a forked child (a process, a clone): the backend has only lane_ now.
  void KeepOnlyCurrentLane();

  std::unique_ptr<Backend> backend_;
  GuestState state_;
  SyscallTable syscalls_;
  GuestClock clock_;
  ForkController fork_;
  bool clone_output_prefix_ = true;
  bool report_memory_stats_ = false;               // VmConfig::report_memory_stats
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
  bool paused_ = false;                     // run thread only
  bool exited_ = false;                     // guarded by control_mutex_
  std::optional<Error> memory_failure_;     // guarded by control_mutex_
  std::atomic<bool> memory_failed_{false};  // memory_failure_ is set
  std::vector<pid_t> page_servers_;         // run thread only: reaped when they end
  std::atomic<pthread_t> run_thread_{};
  std::atomic<bool> run_thread_known_{false};

  // Signals (run thread only). A blocking syscall gave up because a signal became deliverable.
  bool signal_interrupted_ = false;
  // The host deadline alarm_ was last given; -1: give it again.
  int64_t alarm_set_for_ = 0;
  // The FPU image's size and XCR0 as the last handler's entry captured them (constant for a
  // backend on a host): rt_sigreturn needs no capture of its own.
  struct FpuShape {
    size_t xsave_size = 0;
    uint64_t xcr0 = 0;
  };
  std::optional<FpuShape> fpu_shape_;
  // When to stop the guest again for a signal or a control request that could not be served
  // at an interrupted stop (host CLOCK_MONOTONIC ns; 0: none).
  int64_t retry_stop_at_ = 0;
  // When WakeWaitingThreads last polled the host fds of threads waiting for them (host
  // CLOCK_MONOTONIC ns): while some wait and the guest runs, the alarm stops it kFdPollNs
  // later to poll them again.
  int64_t fds_polled_ns_ = 0;
  // Lanes (run thread only).
  int lanes_wanted_ = 1;
  int lane_ = 0;
  bool lane_idle_ = false;
  std::vector<uint8_t> lane_busy_;  // by lane: it has a thread (running, or loaded to run)
  // By lane: when its thread's time slice ends (host CLOCK_MONOTONIC ns), if others can run.
  std::vector<int64_t> lane_slice_end_;
  ThreadSlice thread_slice_;  // how long a slice is (from what switches cost)
  // Lanes to stop at the top of the loop (bit = lane): their thread has a signal to take, or
  // its slice is over while a thread waits for a lane.
  uint64_t lanes_to_kick_ = 0;
  // The lane whose time slice the alarm is set for (SyncAlarm; -1: the alarm is for something
  // else, which any lane's stop serves). Read by the alarm thread.
  std::atomic<int> alarm_lane_{-1};
  // When the alarm last kicked a lane for its slice (host CLOCK_MONOTONIC ns; alarm thread
  // writes, run thread reads): a switch costs from then, not from the slice's end (the guest
  // computes until the kick).
  std::atomic<int64_t> alarm_kicked_at_ns_{0};
  // The slice end the alarm was set for while it was still ahead (SyncAlarm; 0: none): only a
  // switch at that slice's end is a sample of what switches cost, not one long after a
  // slice ended with nothing else to run.
  int64_t armed_slice_end_ = 0;
  // Lanes whose last switch is a sample of its cost (bit = lane), and each one's delay from
  // the kick to the next thread loaded (ScheduleThreads; taken at the lane's next stop).
  uint64_t switch_sample_lanes_ = 0;
  std::array<int64_t, kMaxLanes> switch_delay_ns_{};
  // Kicks the run thread when the guest's interval timer is due. Last: it goes first, before
  // the backend it kicks.
  AlarmThread alarm_{[this] { KickForAlarm(); }};
  // The VM's processes (run thread only); this VMM runs a child process of the guest.
  ProcessTable processes_;
  bool guest_child_ = false;
  // Cloning a VM of several processes, in the cloning process: what the clones' copies of the
  // others need (run thread only; the snapshot process's after ForkSnapshot).
  struct Gathering {
    struct Member {
      int32_t pid = 0;
      UniqueFd copier;  // the connection to its copier (which forks its copies)
    };
    std::vector<Member> members;
    std::vector<uint8_t> table;     // the process table at the clone instant
    ClockCapture clock;             // the guest's clock at that instant
    std::vector<PipeRecord> pipes;  // every pipe of the VM, with its bytes at that instant
    UniqueFd rendezvous;            // in the snapshot process: the clone being made
  };
  std::optional<Gathering> gathering_;
  // A process of a clone of a VM of several processes, other than the cloning one's copy: it
  // reports nothing to the parent VM (the cloning process's copy does).
  bool clone_member_ = false;
  UniqueFd exe_fd_;  // the running program's file (execve of /proc/self/exe); may be invalid
  bool exec_refusal_reported_ = false;
  // Kicks the run thread at other processes' signals and children's ends. After processes_:
  // it goes first.
  ProcessListener listener_{[this] { Kick(); }};
};

}  // namespace flurry
