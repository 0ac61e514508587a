// The Vm's side of VM fork: capturing the state a clone resumes from, and turning a process
// forked from a snapshot into a running clone.
#include <unistd.h>

#include <csignal>

#include "arch/x86_64/cpu_setup.h"
#include "flurry/sf_abi.h"
#include "snapshot/state_capture.h"
#include "vmm/vcpu_state.h"
#include "vmm/vm.h"

namespace flurry {

Result<CloneState> Vm::CaptureResumeState() {
  if (state_.segment_bases.dirty) FLURRY_TRY(ApplySegmentBases());
  VcpuState vcpu = FLURRY_TRY(CaptureVcpu(vcpu_, ResumeRegs(0), x86::HostXcr0()));
  return CloneState{std::move(vcpu), CaptureFiles(state_.fds)};
}

Result<void> Vm::BecomeClone(int32_t id, const CloneState& state) {
  // The KVM objects inherited through fork() belong to the parent's address space (KVM refuses
  // them here); replace them with a new VM around this process's copy of guest memory.
  system_ = FLURRY_TRY(KvmSystem::Open());
  kvm_vm_ = FLURRY_TRY(KvmVm::Create(system_));
  FLURRY_TRY(kvm_vm_.SetMemoryRegion(0, 0, memory_.size(), memory_.host_base()));
  vcpu_ = FLURRY_TRY(KvmVcpu::Create(system_, kvm_vm_, 0));
  FLURRY_TRY_CTX(RestoreVcpu(system_, vcpu_, state.vcpu), "restoring the vCPU");
  vcpu_replaced_ = true;

  state_.identity.ppid = state_.identity.pid;
  state_.identity.pid = getpid();
  state_.identity.tid = state_.identity.pid;
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
  FLURRY_TRY_CTX(RestoreFiles(state.files, root_path, state_.fds), "reopening the guest's files");
  state_.fds.ShareOutput(fork_.output_lock(), /*line_buffered=*/true,
                         clone_output_prefix_ ? fmt::format("[clone {}] ", id) : "");
  clock_ = GuestClock();
  FLURRY_TRY_CTX(clock_.Start(vcpu_, memory_), "starting the clone's clock");
  vcpu_thread_.store(pthread_self());
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
  }
  if (!exit.diagnostic.empty()) {
    std::string line = fmt::format("flurry: clone {}: {}\n", fork_.clone_id(), exit.diagnostic);
    (void)!::write(2, line.data(), line.size());
  }
  fork_.KillOutstanding();
  if (clone_directory_) clone_directory_->Remove();
  fork_.ReportOutcome(outcome);
  _exit(exit.ExitCode());
}

}  // namespace flurry
