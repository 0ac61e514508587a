// The Vm's side of VM fork: capturing the state a clone resumes from, and turning a process
// forked from a snapshot into a running clone.
#include <unistd.h>

#include <csignal>

#include "flurry/sf_abi.h"
#include "memory/lazy_pages.h"
#include "snapshot/descriptor_codec.h"
#include "snapshot/state_capture.h"
#include "vmm/vm.h"

namespace flurry {

Result<x86::UserCpuState> Vm::CaptureCpu() {
  ApplySegmentBases();
  return backend_->CaptureCpu();
}

Result<CloneState> Vm::CaptureResumeState() {
  // At a syscall stop the registers already stand past the syscall; it returns 0 there.
  x86::UserCpuState cpu = FLURRY_TRY(CaptureCpu());
  cpu.regs.rax = 0;
  // In a VM of several processes the pipes' bytes are taken once every process has stopped
  // (vm_gather.cc), not now: another process may be reading them.
  FilesRecord files =
      FLURRY_TRY_CTX(CaptureFiles(state_.fds, state_.monotonic_offset_ns, !HasOtherProcesses()),
                     "capturing the guest's files");
  return CloneState{std::move(cpu), std::move(files)};
}

Result<CloneState> Vm::CaptureCurrentState() {
  x86::UserCpuState cpu = FLURRY_TRY(CaptureCpu());
  if (in_syscall_) {
    // Stopped in a blocking syscall: the copy makes it again (as Linux restarts a syscall a
    // signal interrupted), from the `syscall` instruction.
    cpu.regs.RewindSyscall(syscall_nr_);
  } else if (const std::optional<PartialWrite>& resumed = state_.threads.resumed) {
    // About to make a partial write again: the copy's write returns what it wrote (its pipe
    // is not this one), as CapturedCpu does for the other threads.
    cpu.regs.rip += 2;
    cpu.regs.rax = resumed->done;
  }
  // In a VM of several processes the pipes' bytes are taken once every process has stopped
  // (vm_gather.cc), not now: another process may be reading them.
  FilesRecord files =
      FLURRY_TRY_CTX(CaptureFiles(state_.fds, state_.monotonic_offset_ns, !HasOtherProcesses()),
                     "capturing the guest's files");
  return CloneState{std::move(cpu), std::move(files)};
}

Result<void> Vm::BecomeClone(int32_t id, const CloneState& state) {
  if (!gathering_) return BecomeCloneVm(id, state, nullptr);
  // A clone of a VM of several processes: the copies of the others come here for the clone's
  // process table and pipes (vm_gather.cc).
  const PipeSet pipes = FLURRY_TRY_CTX(AssembleClone(), "assembling the clone's processes");
  Result<void> became = BecomeCloneVm(id, state, &pipes);
  if (!became) processes_.KillOthers();  // the clone is lost: its other processes end now
  return became;
}

Result<void> Vm::BecomeCloneVm(int32_t id, const CloneState& state, const PipeSet* pipes) {
  // A clone becomes the VM its descriptor describes, as a VM restored on another host does
  // (vm_restore.cc): the descriptor is encoded and decoded here, so every local clone goes
  // through the codec and RestoreGuest. Its memory source is this process's copy-on-write
  // image (inherited through fork()), so the descriptor carries no page map.
  // The files as they were at the clone instant (the parent has gone on with them since).
  VmDescriptor described = CaptureGuestStateExceptFiles(state_);
  described.vcpu = state.cpu;
  described.files = state.files;  // offsets as at the clone instant, not as now
  described.backend = backend_->name();
  described.clone = CloneIdentityRecord{fork_.family_id(), id};
  const std::vector<uint8_t> encoded = EncodeDescriptor(described);
  const VmDescriptor d =
      FLURRY_TRY_CTX(DecodeDescriptor(encoded), "decoding the clone's own descriptor");

  FLURRY_TRY_CTX(backend_->BecomeClone(d.vcpu), "loading the clone's CPU state");
  cpu_replaced_ = true;

  // Reopen the guest's files as they were at the clone instant: inherited host fds would share
  // offsets with the parent.
  const HostDir* root = state_.fds.root();
  std::optional<std::string> root_path;
  if (root != nullptr) root_path = root->host_path();
  if (root != nullptr && root->writable()) {
    // Writes go to a copy-on-write view private to this clone.
    clone_directory_ =
        FLURRY_TRY_CTX(CloneDirectory::Create(root->host_path(), fork_.family_id(), id),
                       "giving the clone its own view of --dir");
    root_path = clone_directory_->merged();
  }
  GuestState restored =
      FLURRY_TRY_CTX(RestoreGuest(d, ClockResume::kPlusWallClock, root_path, nullptr, pipes),
                     "becoming the VM of the clone's descriptor");
  // On the parent's host the clone keeps the parent's clock offset exactly (inherited through
  // fork; the kernel clock is the same), so its CLOCK_MONOTONIC is the parent's. A clone on
  // another host continues from the descriptor instead (vm_restore.cc).
  restored.monotonic_offset_ns = state_.monotonic_offset_ns;
  // The pid, ppid and tid are the descriptor's, i.e. the parent's: a clone is a copy of the
  // whole machine, told apart from its parent by its clone ID.
  state_ = std::move(restored);
  state_.cpus = lanes_wanted_;  // the host's, not the descriptor's
  // A clone is a VM of its own: its processes get a table of their own (the parent's is shared
  // memory and stays the parent's). A clone of one process makes it when it runs; a clone of
  // several has it already (AssembleClone, BecomeCloneCopy).
  if (pipes == nullptr) processes_ = ProcessTable();
  state_.fds.ShareOutput(fork_.output_lock(), /*line_buffered=*/true,
                         clone_output_prefix_ ? fmt::format("[clone {}] ", id) : "");
  FLURRY_TRY_CTX(StartClock(), "starting the clone's clock");
  run_thread_.store(pthread_self());
  stop_requested_.store(false);
  return {};
}

void Vm::EndClone(const GuestExit& exit) {
  state_.fds.FlushLineOutput();
  CloneOutcome outcome;
  switch (exit.kind) {
    case GuestExit::Kind::kExited:
      outcome.kind = SF_OUTCOME_EXITED;
      outcome.status = exit.status;
      outcome.result = fork_.exit_result();
      break;
    case GuestExit::Kind::kSignaled:
    case GuestExit::Kind::kTimedOut:
      outcome.kind = SF_OUTCOME_SIGNALED;
      outcome.signal = exit.kind == GuestExit::Kind::kTimedOut ? SIGKILL : exit.signal;
      break;
    case GuestExit::Kind::kLost:
      outcome.kind = SF_OUTCOME_LOST;
      break;
  }
  // A clone whose parent is gone is being taken down with it (its stub may go first): that
  // is no news for anyone.
  if (!exit.diagnostic.empty() && !fork_.ParentGone()) {
    std::string line = fmt::format("flurry: clone {}: {}\n", fork_.clone_id(), exit.diagnostic);
    (void)!::write(2, line.data(), line.size());
  }
  if (report_memory_stats_) {
    if (auto m = backend_->memory().lazy_stats()) {
      const std::string line = fmt::format("flurry: clone {}: memory on demand: {}\n",
                                           fork_.clone_id(), FormatLazyStats(*m));
      (void)!::write(2, line.data(), line.size());
    }
  }
  fork_.KillOutstanding();
  if (clone_directory_) clone_directory_->Remove();
  backend_.reset();  // the guest's stub, where there is one, goes now, not after _exit
  // The clone ends with the process that made it (the copy of the one that called sf_clone):
  // the clone's other processes end too, before any of them sees this one end.
  listener_.Stop();
  processes_.Shutdown();
  processes_.KillOthers();
  fork_.ReportOutcome(outcome);
  _exit(exit.ExitCode());
}

}  // namespace flurry
