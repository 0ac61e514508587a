// Driving a running Vm from outside: the request queue between the API thread and the vCPU
// thread, pause/resume, snapshot and host-initiated clone.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <csignal>
#include <cstdio>

#include "base/unique_fd.h"
#include "snapshot/descriptor_codec.h"
#include "snapshot/state_capture.h"
#include "vmm/vm.h"

namespace flurry {

namespace {
// A page server serves one VMM's guest memory: a VM of several processes cannot be served
// whole yet (snapshots and clones of it can: they gather its processes).
ControlReply OneProcessOnly() {
  return ControlReply::Failure("the guest has more than one process: flurry cannot serve it yet");
}
}  // namespace

ControlReply Vm::Control(const ControlRequest& request) {
  PendingControl pending{request, {}, false};
  std::unique_lock lock(control_mutex_);
  if (exited_) return ControlReply::Failure("the guest has exited", "exited");
  control_queue_.push_back(&pending);
  control_cv_.notify_all();
  // Stop the guest (or interrupt a blocking syscall) so the run thread serves the queue.
  Kick();
  control_cv_.wait(lock, [&] { return pending.done; });
  return pending.reply;
}

bool Vm::ControlPending() {
  if (processes_.GatheringPending()) return true;
  std::lock_guard lock(control_mutex_);
  return !control_queue_.empty();
}

Result<void> Vm::ServeControl() {
  if (std::optional<ProcessTable::Gathering> call = processes_.TakeGathering()) {
    // Another process of the VM clones it: this one stops and has its copies made.
    Result<bool> copy = JoinGathering(*call);
    if (!copy) {
      std::fprintf(stderr, "flurry: process %d, stopping for a clone of the VM: %s\n",
                   state_.identity.pid, copy.error().message().c_str());
    } else if (*copy) {  // this is a process of a clone now: nothing of the parent's is left
      std::lock_guard lock(control_mutex_);
      control_queue_.clear();
      paused_ = false;
      return {};
    }
  }
  for (;;) {
    PendingControl* pending = nullptr;
    {
      std::unique_lock lock(control_mutex_);
      if (control_queue_.empty()) {
        if (!paused_ || stop_requested_.load()) return {};
        control_cv_.wait(lock, [&] { return !control_queue_.empty() || stop_requested_.load(); });
        if (control_queue_.empty()) return {};
      }
      pending = control_queue_.front();
      control_queue_.pop_front();
    }
    const ControlRequest::Kind kind = pending->request.kind;
    const bool cloning = kind == ControlRequest::Kind::kClone;
    // A snapshot or clone records every thread, and a paused VM runs none: threads on other
    // lanes stop first (they run again when the run loop fills the lanes).
    Result<void> gathered;
    if (kind != ControlRequest::Kind::kStatus && kind != ControlRequest::Kind::kResume) {
      gathered = GatherLanes();
    }
    if (!gathered) {
      // A lane that does not stop as the protocol says (a dead stub, a guest that broke its
      // pages): the threads' state is not known any more, so the VM ends with this error.
      const Error error = gathered.error().WithContext("serving a control request");
      FailMemory(error);
      std::lock_guard lock(control_mutex_);
      pending->reply = ControlReply::Failure(error.message());
      pending->done = true;
      control_cv_.notify_all();
      return std::unexpected(error);
    }
    ControlReply reply;
    if (cloning) {
      int32_t clone_id = 0;
      auto clones = fork_.CloneFromOutside(*this, pending->request.count, &clone_id);
      if (clone_id != 0) {
        // This process is a new clone: the requester lives in the parent. Run on.
        // BecomeClone flags the CPU as replaced *during a syscall* (the sf_clone case). Stopped
        // between instructions, the guest's next syscall must complete normally; stopped in a
        // blocking syscall, the handler gives up and the clone makes the syscall again.
        cpu_replaced_ = in_syscall_;
        std::lock_guard lock(control_mutex_);
        control_queue_.clear();
        paused_ = false;
        return {};
      }
      // The snapshot fork stopped this process's listener and alarm threads; the run loop
      // starts them again only after the syscall this may be serving, which can block long.
      SyncAlarm();
      if (auto started = StartProcesses(); !started) return std::unexpected(started.error());
      if (!clones) {
        reply = ControlReply::Failure(clones.error().message());
      } else {
        reply.clone_ids = clones->ids;
        reply.clone_pids = clones->pids;
      }
    } else {
      reply = Execute(pending->request);
    }
    reply.state = paused_ ? "paused" : "running";
    reply.clone_id = fork_.clone_id();
    reply.family_id = fork_.family_id();
    reply.ram_size = backend_->memory().size();
    reply.backend = backend_->name();
    reply.syscalls = syscall_count_;
    reply.on_demand = backend_->memory().lazy_stats();
    std::lock_guard lock(control_mutex_);
    pending->reply = std::move(reply);
    pending->done = true;
    control_cv_.notify_all();
  }
}

ControlReply Vm::Execute(const ControlRequest& request) {
  switch (request.kind) {
    case ControlRequest::Kind::kStatus:
      return {};
    case ControlRequest::Kind::kPause:
      paused_ = true;
      return {};
    case ControlRequest::Kind::kResume:
      paused_ = false;
      return {};
    case ControlRequest::Kind::kSnapshot: {
      auto reply = WriteSnapshot(request.directory);
      if (!reply) return ControlReply::Failure(reply.error().message());
      return *reply;
    }
    case ControlRequest::Kind::kServe: {
      if (processes_.Count() > 1) return OneProcessOnly();
      auto reply = ServeSnapshot(request.address, request.multicast);
      if (!reply) return ControlReply::Failure(reply.error().message());
      return *reply;
    }
    case ControlRequest::Kind::kClone:
      break;
  }
  return ControlReply::Failure("unknown request");
}

}  // namespace flurry
