// Vm::Run: the run loop — the backend runs the guest until it needs the VMM; the VMM serves
// syscalls and control requests.
#include <sys/syscall.h>

#include <csignal>
#include <cstdio>
#include <cstring>
#include <utility>

#include "arch/x86_64/layout.h"
#include "flurry/sf_abi.h"
#include "guest/guest_time.h"
#include "guest/posix_timers.h"
#include "guest/signalfd.h"
#include "vmm/vm.h"

namespace flurry {

Result<GuestExit> Vm::Run() {
  run_thread_.store(pthread_self());
  run_thread_known_.store(true);
  Result<GuestExit> exit = RunLoop();
  alarm_.Stop();  // nothing left to kick
  if (guest_child_ && !fork_.is_clone()) {
    EndGuestProcess(exit ? *exit
                         : GuestExit{GuestExit::Kind::kLost, 0, 0,
                                     "running the process: " + exit.error().message()});
  }
  // The VM's first process is its init: when it ends, the VM's other processes end too.
  listener_.Stop();
  processes_.Shutdown();
  {
    // Anyone still waiting on a control request gets an answer.
    std::lock_guard lock(control_mutex_);
    exited_ = true;
    for (PendingControl* pending : control_queue_) {
      pending->reply = ControlReply::Failure("the guest has exited", "exited");
      pending->done = true;
    }
    control_queue_.clear();
    control_cv_.notify_all();
  }
  if (fork_.is_clone()) {
    // The VMM failing (its memory server gone, ...) loses the clone; the guest did nothing.
    EndClone(exit ? *exit
                  : GuestExit{GuestExit::Kind::kLost, 0, 0,
                              "running the clone: " + exit.error().message()});
  }
  fork_.KillOutstanding();
  if (clone_member_) {
    // The init of a clone of a VM of several processes, not the cloning process's copy: the
    // clone's end is that copy's to report.
    backend_.reset();
    _exit(exit ? exit->ExitCode() : 1);
  }
  return exit;
}

Result<GuestExit> Vm::RunLoop() {
  for (;;) {
    if (stop_requested_.load()) {
      std::lock_guard lock(control_mutex_);
      if (memory_failure_) return std::unexpected(*memory_failure_);
      return GuestExit{GuestExit::Kind::kTimedOut, 0, 0, ""};
    }
    // Runnable threads go to lanes without one; a thread on another lane with a signal to
    // take is made to stop.
    if (auto exit = FLURRY_TRY(FillLanes())) return *exit;
    for (uint64_t kick = std::exchange(lanes_to_kick_, 0); kick != 0; kick &= kick - 1) {
      const int lane = __builtin_ctzll(kick);
      if (backend_->LaneRunning(lane)) backend_->InterruptLane(lane);
    }
    SyncAlarm();
    FLURRY_TRY(StartProcesses());
    const GuestStop stop = FLURRY_TRY(backend_->Run());
    if (lane_idle_ || stop.lane != lane_) SwitchToLane(stop.lane);
    NoteSwitchCost(stop.lane);
    if (memory_failed_.load()) continue;  // serve nothing more: the top of the loop ends it
    TakeProcessSignals();
    SyncSignalfds(state_);  // a syscall may read one now
    // Syscalls read and write the program's buffers under its page protections. (Attached at
    // every stop: a fork's child may have a new GuestMemory.)
    backend_->memory().AttachProtections(&state_.memory_map.protections());
    switch (stop.kind) {
      case GuestStop::Kind::kSyscall: {
        auto done = FLURRY_TRY(HandleSyscall());
        if (done) return *done;
        break;
      }
      case GuestStop::Kind::kInterrupted: {
        retry_stop_at_ = 0;
        // Stopped in an exception stub or the syscall gate (KVM), between the program's
        // instructions and the VMM, the registers are the stub's: neither a control request (a
        // clone or snapshot would capture them) nor a handler's frame fits. The guest comes
        // out by itself; look again in a millisecond.
        const bool in_system_code = x86::InSystemCode(backend_->regs().rip);
        if (!in_system_code) FLURRY_TRY(ServeControl());
        CheckTimers();
        if (in_system_code) {
          if (!state_.threads.others.empty()) WakeWaitingThreads(~state_.signals.blocked);
          if (ControlPending() || NextDeliverableSignal(state_.signals) != 0 ||
              state_.threads.NextRunnable() >= 0) {
            retry_stop_at_ = HostClockNs(CLOCK_MONOTONIC) + 1'000'000;
          }
          break;
        }
        if (NextDeliverableSignal(state_.signals) != 0) {
          SignalDelivery delivery = FLURRY_TRY(DeliverSignals());
          if (delivery.exit) return *delivery.exit;
        }
        // The slice of the running thread may be over, or a parked one's wait.
        auto exit = FLURRY_TRY(ScheduleThreads(false, /*at_kick=*/true));
        if (exit) return *exit;
        break;
      }
      case GuestStop::Kind::kFault: {
        auto exit = FLURRY_TRY(HandleFault(stop));
        if (exit) return *exit;
        exit = FLURRY_TRY(ScheduleThreads(false));  // a handler's frame is final: may switch
        if (exit) return *exit;
        break;
      }
    }
  }
}

Result<std::optional<GuestExit>> Vm::HandleSyscall() {
  ++syscall_count_;
  const x86::UserRegs& regs = backend_->regs();
  SyscallArgs args{regs.rax, {regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9}};
  SyscallContext context{.memory = backend_->memory(),
                         .state = state_,
                         .stop_requested = &stop_requested_,
                         .serve_interrupt = &Vm::ServeDuringSyscall,
                         .serve_interrupt_arg = this,
                         .rsp = regs.rsp,
                         .processes = &processes_};
  if (args.nr == SYS_rt_sigreturn) {
    auto exit = FLURRY_TRY(SigReturn());
    if (exit) return exit;
    return ScheduleThreads(false);
  }
  in_syscall_ = true;
  syscall_nr_ = args.nr;
  SyscallResult result;
  if (args.nr == SYS_execve || args.nr == SYS_execveat) {
    auto exit = FLURRY_TRY(Exec(args, &result));
    if (exit) {
      in_syscall_ = false;
      return exit;
    }
  } else if (!ForkController::IsHypercall(args.nr)) {
    result = syscalls_.Dispatch(context, args);
  } else {
    // A clone copies every thread: those on other lanes stop first.
    if (ForkController::MakesClones(args.nr)) FLURRY_TRY(GatherLanes());
    result = fork_.Handle(context, args, *this);
  }
  in_syscall_ = false;
  state_.threads.resumed.reset();  // only the syscall right after the thread ran again takes it
  const bool interrupted = std::exchange(signal_interrupted_, false);
  if (cpu_replaced_) {  // this process just became a clone; its CPU is fully set up
    cpu_replaced_ = false;
    return std::nullopt;
  }
  switch (result.action) {
    case SyscallResult::Action::kExit:
      return GuestExit{GuestExit::Kind::kExited, static_cast<int>(result.value), 0, ""};
    case SyscallResult::Action::kBlock: {  // a thread waits; another runs
      FLURRY_TRY(ApplyProtectionChanges());
      const std::optional<ThreadBlock> block = std::exchange(state_.threads.block, std::nullopt);
      if (!block) return Fail("syscall {} blocked without saying on what", args.nr);
      return ParkRunningThread(*block, args.nr);
    }
    case SyscallResult::Action::kExitThread:
      FLURRY_TRY(ApplyProtectionChanges());
      ForgetThreadTimers(state_, state_.identity.tid);  // its pending signals end with it
      return RunAnotherThread();
    case SyscallResult::Action::kFork: {  // (CaptureCpu applies what arch_prctl set)
      const std::optional<ProcessFork> request = std::exchange(state_.threads.fork, std::nullopt);
      if (!request) return Fail("syscall {} forked without saying how", args.nr);
      auto child = ForkGuestProcess(*request);
      if (!child) {
        // Not a VMM failure: the guest's fork fails (EAGAIN, as Linux when out of resources).
        std::fprintf(stderr, "flurry: fork: %s\n", child.error().message().c_str());
        result = SyscallResult::Errno(child.error().code_or(EAGAIN));
        break;
      }
      if (!*child) {  // this is the child: its CPU is loaded, past the syscall with RAX 0
        cpu_replaced_ = false;
        return std::nullopt;
      }
      result = SyscallResult::Return(**child);
      break;
    }
    case SyscallResult::Action::kReturn:
    case SyscallResult::Action::kYield:
      break;
  }
  if (const std::optional<ThreadSpawn> spawn = std::exchange(state_.threads.spawn, std::nullopt)) {
    // The new thread starts from the caller's registers as they stand at the syscall.
    SpawnThread(*spawn, FLURRY_TRY_CTX(CaptureCpu(), "starting a thread"));
  }
  FLURRY_TRY(ApplyProtectionChanges());
  ApplySegmentBases();
  if (const int signal = NextDeliverableSignal(state_.signals); signal != 0) {
    // What the handler interrupts is this syscall's return, or, for a syscall the signal
    // interrupted that is restarted, the syscall about to be made again.
    x86::UserRegs& now = backend_->regs();
    if (interrupted && result.value == -EINTR && RestartsAfter(args.nr, signal)) {
      now.RewindSyscall(args.nr);
      result.value = static_cast<int64_t>(args.nr);
    }
    now.rax = static_cast<uint64_t>(result.value);
    SignalDelivery delivery = FLURRY_TRY(DeliverSignals());
    if (delivery.exit) return delivery.exit;
    if (delivery.handler_entered) {
      clock_.Refresh();
      return ScheduleThreads(false);
    }
  }
  backend_->CompleteSyscall(static_cast<uint64_t>(result.value));
  clock_.Refresh();
  return ScheduleThreads(result.action == SyscallResult::Action::kYield);
}

Result<void> Vm::ApplyProtectionChanges() {
  for (const auto& [start, length] : state_.memory_map.TakeProtectionChanges()) {
    FLURRY_TRY_CTX(backend_->Protect(state_.memory_map.protections(), start, length),
                   fmt::format("protecting guest memory [{:#x}, +{:#x})", start, length));
  }
  return {};
}

bool Vm::ServeDuringSyscall(void* arg) {
  Vm& vm = *static_cast<Vm*>(arg);
  if (auto served = vm.ServeControl(); !served) {
    std::fprintf(stderr, "flurry: serving a control request: %s\n",
                 served.error().message().c_str());
  }
  // A host-initiated clone made in a blocking syscall resumes, in the clone, at the syscall.
  if (vm.cpu_replaced_ || vm.stop_requested_.load()) return false;
  // A signal to deliver ends the wait (the syscall returns EINTR, or is restarted).
  vm.CheckTimers();
  vm.TakeProcessSignals();
  if (NextDeliverableSignal(vm.state_.signals) != 0) {
    vm.signal_interrupted_ = true;
    return false;
  }
  return true;
}

void Vm::ApplySegmentBases() {
  if (!state_.segment_bases.dirty) return;
  x86::UserRegs& regs = backend_->regs();
  regs.fs_base = state_.segment_bases.fs_base;
  regs.gs_base = state_.segment_bases.gs_base;
  backend_->MarkSegmentBasesDirty();
  state_.segment_bases.dirty = false;
}

void Vm::Kick() {
  backend_->Interrupt();
  if (run_thread_known_.load()) pthread_kill(run_thread_.load(), SIGUSR1);
}

void Vm::KickForAlarm() {
  const int lane = alarm_lane_.load(std::memory_order_relaxed);
  if (lane < 0) {
    Kick();
    return;
  }
  alarm_kicked_at_ns_.store(HostClockNs(CLOCK_MONOTONIC), std::memory_order_relaxed);
  backend_->InterruptAimed(lane);
  if (run_thread_known_.load()) pthread_kill(run_thread_.load(), SIGUSR1);
}

void Vm::RequestStop() {
  stop_requested_.store(true);
  {
    std::lock_guard lock(control_mutex_);
    control_cv_.notify_all();  // a paused run thread wakes up and sees the stop
  }
  Kick();
}

}  // namespace flurry
