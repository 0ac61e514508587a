// The guest's processes: each runs in a VMM process of its own. fork() in the guest is a
// fork() of this VMM through the backend's fork hooks — the same copy-on-write machinery as a
// VM clone — after which the child VMM rebuilds its backend around its copy of guest memory
// (a new KVM VM, or the forked stub) and resumes the guest with RAX 0. What processes share is
// the VM's process table (guest/process_table.h). See docs/design.md ("Processes").
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fork/snapshot_server.h"
#include "guest/signal_state.h"
#include "guest/signalfd.h"
#include "vmm/vm.h"

namespace flurry {

Result<void> Vm::StartProcesses() {
  if (!processes_.valid()) {
    processes_ = FLURRY_TRY_CTX(ProcessTable::Create(state_.identity.pid, state_.threads.last_tid),
                                "making the VM's process table");
    processes_.SetNoZombies(ChildrenLeaveNoZombies(state_.signals));
  }
  listener_.Start(processes_);
  return {};
}

Result<std::optional<int32_t>> Vm::ForkGuestProcess(const ProcessFork& request) {
  const int32_t pid = processes_.AllocateId();
  const int slot = FLURRY_TRY(processes_.Reserve(pid, request.exit_signal));
  // The child resumes past the syscall, as the parent does, with RAX 0.
  Result<x86::UserCpuState> captured = CaptureCpu();
  if (!captured) {
    processes_.Started(slot, false, UniqueFd());
    return std::unexpected(captured.error().WithContext("forking a process"));
  }
  x86::UserCpuState cpu = std::move(*captured);
  cpu.regs.rax = 0;
  if (request.stack != 0) cpu.regs.rsp = request.stack;
  if (request.set_tls) cpu.regs.fs_base = request.tls;
  state_.fds.FlushLineOutput();  // a partial line is the parent's to write, not both's
  // The control mutex is held across fork(), so the child never inherits it locked by the
  // API thread or the watchdog (a thread that does not exist there to unlock it).
  std::unique_lock control_lock(control_mutex_);
  Result<pid_t> host = ForkWithHooks(*this, /*tied_to_parent=*/false);
  control_lock.unlock();
  if (!host) {
    processes_.Started(slot, false, UniqueFd());
    FLURRY_TRY(StartProcesses());
    return std::unexpected(host.error());
  }
  if (*host > 0) {
    processes_.Started(slot, true, UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, *host, 0))));
    FLURRY_TRY(StartProcesses());
    if (request.parent_tid != 0) (void)backend_->memory().WriteObject(request.parent_tid, pid);
    return pid;
  }
  if (auto became = BecomeGuestChild(slot, pid, cpu, request); !became) {
    const std::string line =
        fmt::format("flurry: starting guest process {}: {}\n", pid, became.error().message());
    (void)!::write(2, line.data(), line.size());
    processes_.Exit(SIGKILL);
    _exit(128 + SIGKILL);
  }
  return std::nullopt;
}

Result<void> Vm::BecomeGuestChild(int slot, int32_t pid, const x86::UserCpuState& cpu,
                                  const ProcessFork& request) {
  const int32_t parent = state_.identity.pid;
  processes_.BecomeChild(slot);
  guest_child_ = true;
  fork_.BecomeGuestProcess();
  FLURRY_TRY_CTX(backend_->BecomeClone(cpu), "loading the child's CPU state");
  cpu_replaced_ = true;
  ProcessIdentity& identity = state_.identity;
  identity.pid = pid;
  identity.tid = pid;
  identity.ppid = parent;
  identity.clear_child_tid = request.child_cleartid ? request.child_tid : 0;
  identity.robust_list = 0;  // Linux forgets it; glibc's fork registers the list again
  identity.robust_list_len = 0;
  if (request.child_settid) (void)backend_->memory().WriteObject(request.child_tid, pid);
  // Only the calling thread is copied; no signal is pending and no timer armed in a child.
  state_.threads.others.clear();
  state_.threads.block.reset();
  state_.threads.spawn.reset();
  state_.threads.fork.reset();
  state_.signals.pending = 0;
  state_.signals.thread_pending = 0;
  state_.signals.real_timer = IntervalTimer{};
  state_.signals.timers.clear();  // timer_create's are not inherited either
  FLURRY_TRY_CTX(RenewSignalfds(state_.fds), "giving the child its own signalfds");
  state_.segment_bases = SegmentBases{cpu.regs.fs_base, cpu.regs.gs_base, false};
  // Nothing of the parent's control requests, page servers or clock carries over.
  {
    std::lock_guard lock(control_mutex_);  // unlocked: ForkGuestProcess held it over fork()
    control_queue_.clear();
  }
  paused_ = false;
  page_servers_.clear();
  FLURRY_TRY_CTX(StartClock(), "starting the child's clock");
  run_thread_.store(pthread_self());
  stop_requested_.store(false);
  return StartProcesses();
}

void Vm::EndGuestProcess(const GuestExit& exit) {
  state_.fds.FlushLineOutput();
  const int wait_status = exit.WaitStatus();
  if (exit.kind == GuestExit::Kind::kLost && !exit.diagnostic.empty()) {
    // The VMM failed: say why (the guest did nothing).
    const std::string line =
        fmt::format("flurry: guest process {}: {}\n", state_.identity.pid, exit.diagnostic);
    (void)!::write(2, line.data(), line.size());
  }
  listener_.Stop();
  fork_.KillOutstanding();
  backend_.reset();  // the stub, where there is one, goes before the parent hears
  processes_.Exit(wait_status);
  _exit(exit.ExitCode());
}

void Vm::TakeProcessSignals() {
  // A child VMM killed from outside could not report: its end is noticed here (the listener
  // asks every second while this process has children).
  if (listener_.TakeChildrenCheck()) processes_.NoticeDeadChildren();
  int32_t sender = 0;
  const uint64_t signals = processes_.TakeSignals(&sender);
  for (int signal = 1; signal <= SignalState::kSignals; ++signal) {
    if ((signals & SignalState::Bit(signal)) == 0) continue;
    const int32_t code = signal == SIGCHLD ? CLD_EXITED : 0;  // SI_USER: kill(2)
    RaiseSignal(state_.signals, signal, PendingSignalInfo{.code = code, .pid = sender});
  }
}

}  // namespace flurry
