// The guest's threads on the backend's one execution context: the VMM switches between them
// at syscalls that block (futex waits, sleeps, waits for host fds), at a thread's exit, at
// sched_yield, and when a thread's time slice ends (the alarm kicks the guest out).
// GuestState::threads holds every thread but the running one. See docs/design.md ("Threads").
#include <poll.h>
#include <sys/syscall.h>

#include <cerrno>
#include <ctime>

#include "guest/guest_time.h"
#include "guest/posix_timers.h"
#include "guest/signal_state.h"
#include "guest/signalfd.h"
#include "vmm/vm.h"

namespace flurry {

Result<GuestThread> Vm::SaveRunningThread() {
  x86::UserCpuState cpu =
      FLURRY_TRY_CTX(CaptureCpu(), "switching threads: saving the running thread");
  GuestThread thread = RunningThreadData();
  thread.cpu = std::move(cpu);
  return thread;
}

Result<std::optional<GuestExit>> Vm::LoadThread(GuestThread thread) {
  PutRunningThreadData(thread);
  lane_busy_[static_cast<size_t>(lane_)] = 1;
  lane_idle_ = false;
  SignalState& signals = state_.signals;
  if (thread.in_syscall && thread.woken_by_signal && thread.block.suspend) {
    // rt_sigsuspend ends: its mask stands while the signal is delivered, and the handler's
    // frame restores the thread's own (as SysRtSigsuspend does for a lone thread).
    signals.saved_mask = signals.blocked;
    signals.mask_saved = true;
    signals.blocked = thread.block.suspend_mask;
  }
  const int signal = NextDeliverableSignal(signals);
  if (thread.restart && thread.block.partial) {
    // A write that parked with part of its bytes written goes on, unless a signal is there
    // to take: then it returns what it wrote (Linux's pipe_write).
    if (signal != 0) {
      WakeThread(thread, static_cast<int64_t>(thread.block.partial->done));
    } else {
      state_.threads.resumed = thread.block.partial;
    }
  }
  // Its syscall's result in RAX, or (restarted) on its syscall instruction to take its signal.
  thread.cpu = ResumableCpu(thread);
  // A wait a signal ended is made again after the handler, as HandleSyscall does.
  if (thread.in_syscall && !thread.restart && signal != 0 && thread.result == -EINTR &&
      RestartsAfter(thread.syscall_nr, signal)) {
    thread.cpu.regs.RewindSyscall(thread.syscall_nr);
  }
  FLURRY_TRY_CTX(backend_->LoadCpu(thread.cpu),
                 fmt::format("switching threads: loading thread {}", thread.tid));
  lane_slice_end_[static_cast<size_t>(lane_)] =
      HostClockNs(CLOCK_MONOTONIC) + thread_slice_.length_ns();
  if (signal == 0) return std::nullopt;
  SignalDelivery delivery = FLURRY_TRY(DeliverSignals());
  return delivery.exit;
}

Result<void> Vm::EndResumedWrite() {
  std::optional<PartialWrite> resumed = std::move(state_.threads.resumed);
  state_.threads.resumed.reset();
  if (!resumed) return {};
  x86::UserCpuState cpu = FLURRY_TRY(CaptureCpu());
  cpu.regs.rip += 2;  // past `syscall`, which it was about to make again
  cpu.regs.rax = resumed->done;
  return backend_->LoadCpu(cpu);
}

void Vm::SpawnThread(const ThreadSpawn& spawn, x86::UserCpuState cpu) {
  GuestThread child;
  child.tid = spawn.tid;
  child.cpu = std::move(cpu);
  x86::UserRegs& regs = child.cpu.regs;
  regs.rax = 0;  // clone returns 0 in the child, past the syscall as in the parent
  if (spawn.stack != 0) regs.rsp = spawn.stack;
  if (spawn.set_tls) regs.fs_base = spawn.tls;  // the caller's bases otherwise (CaptureCpu)
  child.clear_child_tid = spawn.clear_child_tid;
  child.blocked = state_.signals.blocked;  // a new thread starts with its creator's mask
  state_.threads.others.push_back(std::move(child));
}

void Vm::WakeWaitingThreads(uint64_t taken_by_running) {
  ThreadTable& threads = state_.threads;
  threads.WakeExpired(GuestMonotonicNs(state_.monotonic_offset_ns));
  // Threads waiting for host fds (pipes, stdio, signalfds, kept readable while a signal of
  // theirs is pending): one poll over them all, without waiting. A ready one makes its syscall
  // again.
  SyncSignalfds(state_, /*thread_running=*/taken_by_running != 0);  // 0: none runs
  if (std::vector<pollfd> fds = threads.FdWaitSet(); !fds.empty()) {
    fds_polled_ns_ = HostClockNs(CLOCK_MONOTONIC);
    if (poll(fds.data(), fds.size(), 0) > 0) threads.WakeReadyFds(fds);
  }
  // A signal sent to the process goes to one thread that does not block it: the running one if
  // it can take it, else a parked one, whose wait it ends.
  uint64_t unclaimed = state_.signals.pending & ~taken_by_running;
  for (GuestThread& thread : threads.others) {
    // A thread in rt_sigtimedwait or reading a signalfd also takes the blocked signals it waits
    // for; one in rt_sigsuspend waits under its mask (kept after a wake, as the whole
    // ThreadBlock is).
    const uint64_t waited = thread.wait == ThreadWait::kSignal || thread.wait == ThreadWait::kFd
                                ? thread.block.signal_set & thread.blocked
                                : 0;
    const uint64_t mine = unclaimed | thread.thread_pending;
    const uint64_t deliverable = mine & ~thread.block.WaitMask(thread.blocked);
    if ((deliverable | (mine & waited)) == 0) {
      // A wait a signal ended, whose signal another thread has taken (or that was ignored
      // since), goes on: Linux never returns EINTR without a handler having run.
      if (thread.woken_by_signal) Repark(thread);
      continue;
    }
    unclaimed &= ~(deliverable | waited);
    // A thread running on another lane takes them at its next stop: make it stop.
    if (thread.lane >= 0 && deliverable != 0) lanes_to_kick_ |= 1ULL << thread.lane;
    if (!thread.parked()) continue;  // it takes them when it next runs
    if (deliverable == 0) {          // only signals it waits for: it makes the syscall again
      RestartThread(thread);
      continue;
    }
    if (thread.wait == ThreadWait::kSleep && thread.block.remain_addr != 0) {
      const int64_t left = thread.block.deadline_ns - GuestMonotonicNs(state_.monotonic_offset_ns);
      (void)backend_->memory().WriteObject(thread.block.remain_addr,
                                           NsTimespec(left > 0 ? left : 0));
    }
    InterruptThread(thread);
  }
}

Result<std::optional<GuestExit>> Vm::RunAnotherThread() {
  ThreadTable& threads = state_.threads;
  for (;;) {
    TakeProcessSignals();
    WakeWaitingThreads(0);
    if (const int next = threads.NextRunnable(); next >= 0) {
      GuestThread thread = std::move(threads.others[static_cast<size_t>(next)]);
      threads.others.erase(threads.others.begin() + next);
      return LoadThread(std::move(thread));
    }
    if (stop_requested_.load()) return std::nullopt;  // the run loop ends the VM
    if (OtherLanesBusy()) {  // nothing for this lane: the run loop waits for the others
      IdleLane();
      return std::nullopt;
    }
    // Every thread waits: sleep until the first deadline, a timer, a host fd a thread waits for
    // being ready, or a kick (EINTR), and at most 100 ms, so a kick that came just before the
    // sleep is not lost for long.
    const int64_t now = HostClockNs(CLOCK_MONOTONIC);
    int64_t until = now + 100'000'000;
    for (int64_t guest : {threads.EarliestDeadline(), NextTimerExpiryNs(state_)}) {
      if (guest != 0) until = std::min(until, HostFromGuestNs(guest, state_.monotonic_offset_ns));
    }
    if (until > now) {
      std::vector<pollfd> fds = threads.FdWaitSet();
      const timespec timeout = NsTimespec(until - now);
      ppoll(fds.data(), fds.size(), &timeout, nullptr);
    }
    if (paused_ || ControlPending()) {
      // Control requests are served with a running thread (a snapshot or a clone captures
      // one): the longest-waiting one, standing on its syscall instruction (it makes the
      // syscall again), as a clone records every waiting thread. Here it then waits on as
      // before.
      size_t oldest = 0;
      for (size_t i = 1; i < threads.others.size(); ++i) {
        if (threads.others[i].wait_seq < threads.others[oldest].wait_seq) oldest = i;
      }
      GuestThread waiting = threads.others[oldest];
      threads.others.erase(threads.others.begin() + static_cast<ptrdiff_t>(oldest));
      GuestThread resumed = waiting;
      resumed.cpu = CapturedCpu(waiting);
      resumed.in_syscall = false;
      resumed.wait = ThreadWait::kRunnable;
      auto exit = FLURRY_TRY(LoadThread(std::move(resumed)));
      if (exit) return exit;
      const int32_t clone_id = fork_.clone_id();
      FLURRY_TRY(ServeControl());
      // A new clone runs from its descriptor, that thread first.
      if (fork_.clone_id() != clone_id || stop_requested_.load()) return std::nullopt;
      threads.others.insert(threads.others.begin() + static_cast<ptrdiff_t>(oldest),
                            std::move(waiting));
      continue;
    }
    CheckTimers();
  }
}

Result<std::optional<GuestExit>> Vm::ParkRunningThread(const ThreadBlock& block,
                                                       uint64_t syscall_nr) {
  GuestThread thread = FLURRY_TRY(SaveRunningThread());
  thread.in_syscall = true;
  thread.syscall_nr = syscall_nr;
  thread.wait = block.wait;
  thread.block = block;
  thread.wait_seq = ++state_.threads.wait_seq;
  state_.threads.others.push_back(std::move(thread));
  return RunAnotherThread();
}

void Vm::NoteSwitchCost(int lane) {
  const uint64_t bit = uint64_t{1} << lane;
  if ((switch_sample_lanes_ & bit) == 0) return;
  switch_sample_lanes_ &= ~bit;
  const int64_t stopped = backend_->LaneStoppedNs(lane);
  const int64_t cost = stopped >= 0 ? stopped : switch_delay_ns_[static_cast<size_t>(lane)];
  thread_slice_.NoteSwitch(cost);
}

Result<std::optional<GuestExit>> Vm::ScheduleThreads(bool yield, bool at_kick) {
  ThreadTable& threads = state_.threads;
  if (threads.others.empty()) return std::nullopt;
  WakeWaitingThreads(~state_.signals.blocked);
  if (threads.NextRunnable() < 0) return std::nullopt;
  const int64_t now = HostClockNs(CLOCK_MONOTONIC);
  if (!yield && now < lane_slice_end_[static_cast<size_t>(lane_)]) {
    // Not this thread's turn to yield: another lane's thread may be past its slice (the kick
    // that stopped this lane was not aimed); that lane yields at its next stop.
    for (size_t lane = 0; lane < lane_busy_.size(); ++lane) {
      if (lane_busy_[lane] != 0 && static_cast<int>(lane) != lane_ &&
          lane_slice_end_[lane] <= now) {
        lanes_to_kick_ |= 1ULL << lane;
      }
    }
    return std::nullopt;
  }
  const int64_t slice_end = lane_slice_end_[static_cast<size_t>(lane_)];
  GuestThread thread = FLURRY_TRY(SaveRunningThread());
  threads.others.push_back(std::move(thread));
  auto exit = FLURRY_TRY(RunAnotherThread());
  // A switch at a kick's stop, at the end of a slice the alarm was set for (not one long
  // after a slice ended with nothing else to run), is a sample of what switches cost: how long the
  // lane stood stopped, known at its next stop (RunLoop). Where the backend does not measure that,
  // from the alarm's kick (or the slice's end, if the lane stopped by itself after it) to the next
  // thread loaded.
  if (at_kick && !yield && !exit && slice_end != 0 && slice_end == armed_slice_end_ &&
      !lane_idle_) {
    const int64_t from = std::max(slice_end, alarm_kicked_at_ns_.load(std::memory_order_relaxed));
    switch_delay_ns_[static_cast<size_t>(lane_)] = HostClockNs(CLOCK_MONOTONIC) - from;
    switch_sample_lanes_ |= uint64_t{1} << lane_;
  }
  return exit;
}

}  // namespace flurry
