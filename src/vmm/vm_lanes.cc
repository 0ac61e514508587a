// Lanes: the guest's threads running in parallel, each on a lane of the backend (a stub thread
// under seccomp), while this run thread serves their stops one at a time. The thread whose
// stop is served stands in state_ and the backend's selected lane, as with one lane; a thread
// running on another lane is a GuestThread with `lane` set, holding its per-thread data. See
// docs/design.md ("Threads").
#include <sched.h>

#include <algorithm>
#include <cstdio>

#include "base/check.h"
#include "vmm/vm.h"

namespace flurry {

void Vm::SetLanes(int wanted) {
  if (wanted <= 0) {  // the CPUs this VMM may run on (its affinity: taskset, cpusets)
    cpu_set_t set;
    CPU_ZERO(&set);
    wanted = sched_getaffinity(0, sizeof set, &set) == 0 ? CPU_COUNT(&set) : 1;
  }
  lanes_wanted_ = std::clamp(wanted, 1, std::min(backend_->max_lanes(), kMaxLanes));
  lane_busy_.assign(static_cast<size_t>(backend_->max_lanes()), 0);
  lane_slice_end_.assign(lane_busy_.size(), 0);
  lane_ = backend_->selected();
  lane_busy_[static_cast<size_t>(lane_)] = 1;
  lane_idle_ = false;
  state_.cpus = lanes_wanted_;
}

GuestThread Vm::RunningThreadData() {
  GuestThread thread;
  const ProcessIdentity& identity = state_.identity;
  thread.tid = identity.tid;
  thread.clear_child_tid = identity.clear_child_tid;
  thread.robust_list = identity.robust_list;
  thread.robust_list_len = identity.robust_list_len;
  const SignalState& signals = state_.signals;
  thread.blocked = signals.blocked;
  thread.thread_pending = signals.thread_pending;
  thread.altstack = signals.altstack;
  thread.resumed = std::move(state_.threads.resumed);
  state_.threads.resumed.reset();
  return thread;
}

void Vm::PutRunningThreadData(GuestThread& thread) {
  ProcessIdentity& identity = state_.identity;
  identity.tid = thread.tid;
  identity.clear_child_tid = thread.clear_child_tid;
  identity.robust_list = thread.robust_list;
  identity.robust_list_len = thread.robust_list_len;
  SignalState& signals = state_.signals;
  signals.blocked = thread.blocked;
  signals.thread_pending = thread.thread_pending;
  signals.altstack = thread.altstack;
  // The bases are the CPU state's (CaptureCpu applied what arch_prctl set before the switch).
  state_.segment_bases = SegmentBases{thread.cpu.regs.fs_base, thread.cpu.regs.gs_base, false};
  state_.threads.resumed = std::move(thread.resumed);
  thread.resumed.reset();
}

bool Vm::OtherLanesBusy() const {
  for (size_t lane = 0; lane < lane_busy_.size(); ++lane) {
    if (lane_busy_[lane] != 0 && static_cast<int>(lane) != lane_) return true;
  }
  return false;
}

void Vm::StashRunningThread() {
  FLURRY_CHECK(!lane_idle_ && !state_.segment_bases.dirty);
  GuestThread thread = RunningThreadData();
  thread.cpu.regs.fs_base = state_.segment_bases.fs_base;
  thread.cpu.regs.gs_base = state_.segment_bases.gs_base;
  thread.lane = lane_;
  state_.threads.others.push_back(std::move(thread));
  lane_idle_ = true;  // until another thread's data stands in state_
}

void Vm::SwitchToLane(int lane) {
  if (lane == lane_ && !lane_idle_) return;
  if (!lane_idle_) StashRunningThread();
  std::vector<GuestThread>& others = state_.threads.others;
  auto it = std::find_if(others.begin(), others.end(),
                         [lane](const GuestThread& t) { return t.lane == lane; });
  FLURRY_CHECK(it != others.end());  // a lane runs only while its thread is recorded
  GuestThread thread = std::move(*it);
  others.erase(it);
  thread.lane = -1;
  PutRunningThreadData(thread);
  lane_ = lane;
  lane_idle_ = false;
}

void Vm::IdleLane() {
  backend_->SetIdle(lane_);
  lane_busy_[static_cast<size_t>(lane_)] = 0;
  lane_idle_ = true;
}

int Vm::FreeLane() {
  int existing = 0;
  for (int lane = 0; lane < static_cast<int>(lane_busy_.size()); ++lane) {
    if (!backend_->LaneExists(lane)) continue;
    ++existing;
    if (lane_busy_[static_cast<size_t>(lane)] == 0) return lane;
  }
  int first = -1;
  while (existing < lanes_wanted_) {
    Result<int> added = backend_->AddLane();  // the selected lane (lane_) is stopped
    if (!added) {
      std::fprintf(stderr, "flurry: adding a lane for the guest's threads: %s\n",
                   added.error().message().c_str());
      lanes_wanted_ = existing;  // run them on the lanes there are
      state_.cpus = lanes_wanted_;
      break;
    }
    ++existing;
    if (first < 0) first = *added;
  }
  return first;
}

Result<std::optional<GuestExit>> Vm::FillLanes() {
  if (lanes_wanted_ <= 1) return std::nullopt;
  ThreadTable& threads = state_.threads;
  while (threads.NextRunnable() >= 0) {
    const int lane = FreeLane();
    if (lane < 0) break;
    if (!lane_idle_) StashRunningThread();
    const int next = threads.NextRunnable();
    GuestThread thread = std::move(threads.others[static_cast<size_t>(next)]);
    threads.others.erase(threads.others.begin() + next);
    backend_->Select(lane);
    lane_ = lane;
    auto exit = FLURRY_TRY(LoadThread(std::move(thread)));  // makes the lane busy
    if (exit) return exit;
  }
  return std::nullopt;
}

Result<void> Vm::GatherLanes() {
  if (!OtherLanesBusy()) return {};
  const int home = lane_;
  Result<void> gathered = GatherOtherLanes(home);
  backend_->Select(home);  // whatever happened: the served thread's lane
  return gathered;
}

Result<void> Vm::GatherOtherLanes(int home) {
  for (;;) {
    bool running = false;
    for (int lane = 0; lane < static_cast<int>(lane_busy_.size()); ++lane) {
      if (lane != home && backend_->LaneRunning(lane)) running = true;
    }
    if (!running) return {};
    backend_->Interrupt();
    const std::optional<GuestStop> stop =
        FLURRY_TRY_CTX(backend_->WaitRunning(), "stopping the guest's threads");
    if (!stop) return {};
    FLURRY_CHECK(stop->lane != home);
    std::vector<GuestThread>& others = state_.threads.others;
    auto it = std::find_if(others.begin(), others.end(),
                           [&](const GuestThread& t) { return t.lane == stop->lane; });
    FLURRY_CHECK(it != others.end());
    x86::UserCpuState cpu = FLURRY_TRY_CTX(backend_->CaptureCpu(), "stopping the guest's threads");
    // Bases as the VMM set them (arch_prctl is served, never run on a lane by itself).
    cpu.regs.fs_base = it->cpu.regs.fs_base;
    cpu.regs.gs_base = it->cpu.regs.gs_base;
    // The stop is not served here: the thread stands where running again makes it again.
    if (stop->kind == GuestStop::Kind::kSyscall) {
      cpu.regs.RewindSyscall(cpu.regs.rax);  // as a clone's waiting threads
    } else if (stop->kind == GuestStop::Kind::kFault) {
      // A trap stands past its instruction (replay_back); a fault on it. (A single-step trap
      // is not made again: the thread's trap flag traps at its next instruction instead.)
      cpu.regs.rip -= static_cast<uint64_t>(stop->replay_back);
    }
    it->cpu = std::move(cpu);
    it->lane = -1;
    backend_->SetIdle(stop->lane);
    lane_busy_[static_cast<size_t>(stop->lane)] = 0;
    switch_sample_lanes_ &= ~(uint64_t{1} << stop->lane);  // its stop was taken here
  }
}

Result<void> Vm::OneLaneForFork() {
  if (lane_busy_.size() <= 1) return {};
  FLURRY_TRY(GatherLanes());
  if (lane_ != 0) {
    FLURRY_CHECK(!lane_idle_);  // a fork is made for a thread's syscall or a control request
    x86::UserCpuState cpu = FLURRY_TRY_CTX(CaptureCpu(), "moving the thread to lane 0");
    backend_->SetIdle(lane_);
    lane_busy_[static_cast<size_t>(lane_)] = 0;
    backend_->Select(0);
    FLURRY_TRY_CTX(backend_->LoadCpu(cpu), "moving the thread to lane 0");
    lane_ = 0;
    lane_busy_[0] = 1;
  }
  switch_sample_lanes_ = 0;  // the lanes' next runs come after the fork
  return backend_->EndOtherLanes();
}

void Vm::KeepOnlyCurrentLane() {
  std::fill(lane_busy_.begin(), lane_busy_.end(), 0);
  if (!lane_busy_.empty()) lane_busy_[static_cast<size_t>(lane_)] = lane_idle_ ? 0 : 1;
}

}  // namespace flurry
