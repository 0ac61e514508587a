// The KVM backend's lanes: one vCPU each. While one lane exists the run thread runs its vCPU
// itself (KvmBackend::Run), as before lanes: no hand-off on the hot path. With several, each
// lane's vCPU runs on a thread of its own ("flurry-vcpuN"), which only enters KVM_RUN when
// told (phase kGo) and reports the exit (kDone, a bump of stops_); the run thread decodes and
// serves the stops one at a time. See docs/design.md ("Threads").
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>

#include "backend/kvm/kvm_backend.h"
#include "base/check.h"
#include "base/clock.h"

namespace flurry {
namespace {

// The first instruction of the syscall gate or of an exception stub.
bool AtSystemEntry(uint64_t rip) {
  if (rip == x86::kSyscallGateAddr) return true;
  const uint64_t stubs_end =
      x86::kExceptionStubsAddr + x86::kExceptionVectors * x86::kExceptionStubSize;
  return rip >= x86::kExceptionStubsAddr && rip < stubs_end &&
         (rip - x86::kExceptionStubsAddr) % x86::kExceptionStubSize == 0;
}

// The phase and stop words are waited on with futexes of their own (not std::atomic::wait,
// whose wake-ups go through libstdc++'s waiter table): a wake is a syscall, a wait returns
// when the word differs from `expected`, or spuriously (callers look again).
static_assert(sizeof(std::atomic<uint32_t>) == sizeof(uint32_t));
void FutexWait(std::atomic<uint32_t>& word, uint32_t expected) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, nullptr,
          nullptr, 0);
}
void FutexWake(std::atomic<uint32_t>& word) {
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(&word), FUTEX_WAKE_PRIVATE, INT32_MAX, nullptr,
          nullptr, 0);
}

}  // namespace

int KvmBackend::existing_lanes() const {
  int count = 0;
  for (const KvmLane& lane : lanes_) count += lane.exists ? 1 : 0;
  return count;
}

bool KvmBackend::LaneExists(int lane) const {
  return lane >= 0 && lane < static_cast<int>(lanes_.size()) &&
         lanes_[static_cast<size_t>(lane)].exists;
}

bool KvmBackend::LaneRunning(int lane) const {
  if (!threaded_.load() || !LaneExists(lane)) return false;
  const KvmLane& l = lanes_[static_cast<size_t>(lane)];
  const uint32_t phase = l.phase.load(std::memory_order_acquire);
  return l.active && (phase == KvmLane::kGo || phase == KvmLane::kDone);
}

Result<int> KvmBackend::AddLane() {
  int index = -1;
  for (int i = 0; i < max_lanes_; ++i) {
    if (!lanes_[static_cast<size_t>(i)].exists) {
      index = i;
      break;
    }
  }
  if (index < 0) return Fail("the VM has {} vCPUs, as many as it may", max_lanes_);
  KvmLane& lane = lanes_[static_cast<size_t>(index)];
  if (!lane.vcpu_ready) {
    FLURRY_TRY_CTX(MakeVcpu(index), "adding a lane");
  } else {
    lane.vcpu->ClearImmediateExit();  // an old kick's
    lane.stopped_ns = -1;             // its last run was before its lanes ended
    lane.run_ended_at_ns = 0;
    // Idle since its lanes ended, it missed the flushes of the one lane that ran: its TLB may
    // hold translations of pages since unmapped or protected, and of retired tables.
    tlb_stale_ = true;
  }
  lane.exists = true;
  lane.active = false;
  lane.phase.store(KvmLane::kParked);
  if (threaded_.load()) {
    StartLaneThread(index);
    return index;
  }
  for (int i = 0; i < static_cast<int>(lanes_.size()); ++i) {
    if (lanes_[static_cast<size_t>(i)].exists) StartLaneThread(i);
  }
  threaded_.store(true);
  return index;
}

Result<void> KvmBackend::EndOtherLanes() {
  if (!threaded_.load()) return {};
  for (int i = 0; i < static_cast<int>(lanes_.size()); ++i) {
    const uint32_t phase = lanes_[static_cast<size_t>(i)].phase.load();
    if (i != selected_ && (phase == KvmLane::kGo || phase == KvmLane::kDone)) {
      return Fail("lane {} runs guest code (or has a stop not served): stop it first", i);
    }
  }
  StopLaneThreads();
  for (int i = 0; i < static_cast<int>(lanes_.size()); ++i) {
    if (i == selected_) continue;
    lanes_[static_cast<size_t>(i)].exists = false;
    lanes_[static_cast<size_t>(i)].active = false;
  }
  direct_run_area_.store(lane().run_area.load());
  threaded_.store(false);
  // An Interrupt() that found no lane running while the lanes ended still stops the guest.
  if (interrupt_next_.exchange(false)) InterruptDirectLane();
  return {};
}

void KvmBackend::StartLaneThread(int index) {
  KvmLane& lane = lanes_[static_cast<size_t>(index)];
  FLURRY_CHECK(!lane.thread.joinable());
  lane.thread = std::thread([this, &lane, index] {
    char name[16];
    std::snprintf(name, sizeof name, "flurry-vcpu%d", index);
    pthread_setname_np(pthread_self(), name);
    // Published before the first KVM_RUN reads immediate_exit (Kick stores it, then reads
    // this: one of the two sees the other's store).
    lane.tid.store(static_cast<pid_t>(syscall(SYS_gettid)), std::memory_order_seq_cst);
    for (;;) {
      uint32_t phase = lane.phase.load(std::memory_order_acquire);
      while (phase != KvmLane::kGo && phase != KvmLane::kQuit) {
        FutexWait(lane.phase, phase);
        phase = lane.phase.load(std::memory_order_acquire);
      }
      if (phase == KvmLane::kQuit) break;
      lane.exit = RunVcpu(lane);
      lane.phase.store(KvmLane::kDone, std::memory_order_release);
      stops_.fetch_add(1, std::memory_order_release);
      FutexWake(stops_);
    }
    lane.tid.store(0);
  });
}

Result<uint32_t> KvmBackend::RunVcpu(KvmLane& lane) {
  const int64_t entered = MonotonicNs();
  lane.stopped_ns = lane.run_ended_at_ns != 0 ? entered - lane.run_ended_at_ns : -1;
  Result<uint32_t> exit = lane.vcpu->Run();
  lane.run_ended_at_ns = MonotonicNs();
  return exit;
}

int64_t KvmBackend::LaneStoppedNs(int lane) const {
  return LaneExists(lane) ? lanes_[static_cast<size_t>(lane)].stopped_ns : -1;
}

void KvmBackend::StopLaneThreads() {
  for (KvmLane& lane : lanes_) {
    if (!lane.thread.joinable()) continue;
    // A lane still running guest code (the VM ends while it computes) is stopped first.
    for (;;) {
      const uint32_t seen = stops_.load(std::memory_order_acquire);
      if (lane.phase.load(std::memory_order_acquire) != KvmLane::kGo) break;
      Kick(lane);
      FutexWait(stops_, seen);
    }
    lane.phase.store(KvmLane::kQuit, std::memory_order_release);
    FutexWake(lane.phase);
    lane.thread.join();
    lane.phase.store(KvmLane::kParked);
  }
}

KvmBackend::~KvmBackend() { StopLaneThreads(); }

void KvmBackend::Resume(KvmLane& lane) {
  lane.phase.store(KvmLane::kGo);
  FutexWake(lane.phase);
}

void KvmBackend::Kick(KvmLane& lane) {
  if (kvm_run* run = lane.run_area.load()) KvmVcpu::RequestImmediateExit(*run);
  // A thread in KVM_RUN leaves it for a signal it handles (the VMM's SIGUSR1 kick handler).
  if (const pid_t tid = lane.tid.load(); tid != 0) {
    syscall(SYS_tgkill, getpid(), tid, SIGUSR1);
  }
}

bool KvmBackend::KickRunningLane() {
  // Not satisfied by a stop already waiting: the VMM serves control requests and timers at
  // kInterrupted stops only, so a kick must make one.
  for (KvmLane& lane : lanes_) {
    if (lane.phase.load() == KvmLane::kGo) {
      Kick(lane);
      return true;
    }
  }
  return false;
}

void KvmBackend::InterruptDirectLane() {
  if (kvm_run* run = direct_run_area_.load()) KvmVcpu::RequestImmediateExit(*run);
}

void KvmBackend::Interrupt() {
  if (!threaded_.load()) {
    InterruptDirectLane();
    // Still one lane: the run thread enters KVM_RUN after this store, or is in it and gets the
    // VMM's kick signal. If AddLane made lane threads meanwhile (it sets threaded_ before any
    // lane is resumed), that lane may be in KVM_RUN on its own thread: kick as below.
    if (!threaded_.load()) return;
  }
  if (KickRunningLane()) return;
  // None runs: the next one resumed stops at once (RunLanes). Looked again in case one was
  // resumed meanwhile (RunLanes may have looked at the flag before it was set).
  interrupt_next_.store(true);
  if (!threaded_.load()) {
    // The lanes ended meanwhile (EndOtherLanes may have looked at the flag before it was
    // set): the one lane left stops at its next entry instead.
    if (interrupt_next_.exchange(false)) InterruptDirectLane();
    return;
  }
  KickRunningLane();
}

void KvmBackend::InterruptLane(int lane) {
  if (!threaded_.load()) {
    Interrupt();
    return;
  }
  if (!LaneExists(lane)) return;
  KvmLane& l = lanes_[static_cast<size_t>(lane)];
  if (l.phase.load() == KvmLane::kGo) Kick(l);
}

void KvmBackend::InterruptAimed(int lane) {
  // (Atomics only: any thread. A lane that stops meanwhile takes a spurious kick, as allowed.
  // A parked lane may be idle: another is stopped instead, as Interrupt() does.)
  if (threaded_.load() && lane >= 0 && lane < static_cast<int>(lanes_.size())) {
    KvmLane& l = lanes_[static_cast<size_t>(lane)];
    const uint32_t phase = l.phase.load();
    if (phase == KvmLane::kGo) {
      Kick(l);
      return;
    }
    // Stopped, its stop not yet returned: the run loop serves that stop (and switches there
    // if the slice is over); stopping another lane would only cost it a stop.
    if (phase == KvmLane::kDone) return;
  }
  Interrupt();
}

Result<GuestStop> KvmBackend::RunLanes() {
  for (KvmLane& lane : lanes_) {
    if (!lane.exists || !lane.active || lane.phase.load() != KvmLane::kParked) continue;
    FLURRY_TRY(ApplySegmentBases(lane));
    Resume(lane);
  }
  if (interrupt_next_.exchange(false)) KickRunningLane();
  std::optional<GuestStop> stop = FLURRY_TRY(WaitForStop());
  if (!stop) return Fail("no lane of the guest runs");
  return std::move(*stop);
}

Result<std::optional<GuestStop>> KvmBackend::WaitRunning() {
  if (!threaded_.load()) return std::nullopt;
  return WaitForStop(/*through_system_code=*/true);
}

Result<std::optional<GuestStop>> KvmBackend::WaitForStop(bool through_system_code) {
  const size_t count = lanes_.size();
  for (;;) {
    const uint32_t seen = stops_.load(std::memory_order_acquire);
    bool running = false;
    for (size_t k = 0; k < count; ++k) {
      const size_t i = (next_scan_ + k) % count;
      KvmLane& lane = lanes_[i];
      if (!lane.exists || !lane.active) continue;
      const uint32_t phase = lane.phase.load(std::memory_order_acquire);
      if (phase == KvmLane::kGo) running = true;
      if (phase != KvmLane::kDone) continue;
      lane.phase.store(KvmLane::kParked);
      selected_ = static_cast<int>(i);
      next_scan_ = i + 1;
      std::optional<GuestStop> stop =
          FLURRY_TRY_CTX(DecodeExit(lane.exit), fmt::format("running vCPU {}", i));
      // KVM_EXIT_INTR: a kick; reported as one (WaitRunning must not resume the lane).
      if (!stop) stop.emplace(GuestStop::Kind::kInterrupted);
      // Kicked on the way into the gate or an exception stub, the vCPU stands where no user
      // view of its thread exists (the VMM's stops of the whole VM record every thread's):
      // its next instruction (the doorbell write, the stub's port write) makes the syscall's
      // or the exception's own stop, which has one.
      if (through_system_code && stop->kind == GuestStop::Kind::kInterrupted &&
          AtSystemEntry(lane.regs.rip)) {
        Resume(lane);
        running = true;
        continue;
      }
      stop->lane = static_cast<int>(i);
      return stop;
    }
    if (!running) return std::nullopt;
    FutexWait(stops_, seen);
  }
}

}  // namespace flurry
