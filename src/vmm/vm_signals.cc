// Signal delivery: the guest's pending signals run their handlers (a frame on the guest's
// stack, src/guest/signal_frame.h) or their default actions; faults go to the guest's handler
// when it has one; rt_sigreturn resumes what a handler interrupted. All on the run thread,
// at a stop of the backend. docs/design.md ("Signals").
#include <sys/syscall.h>

#include <algorithm>
#include <csignal>
#include <cstring>

#include "arch/x86_64/layout.h"
#include "guest/guest_time.h"
#include "guest/posix_timers.h"
#include "vmm/vm.h"

namespace flurry {
namespace {

constexpr int32_t kSiKernel = 0x80;  // SI_KERNEL: what setitimer's SIGALRM carries

std::string SignalName(int signal) {
  const char* name = sigabbrev_np(signal);
  return name != nullptr ? fmt::format("SIG{}", name) : fmt::format("signal {}", signal);
}

GuestExit KilledBy(int signal, std::string diagnostic) {
  return GuestExit{GuestExit::Kind::kSignaled, 0, signal, std::move(diagnostic)};
}

bool IsHandler(uint64_t handler) {
  return handler != reinterpret_cast<uint64_t>(SIG_DFL) &&
         handler != reinterpret_cast<uint64_t>(SIG_IGN);
}

}  // namespace

void Vm::CheckTimers() {
  FireDueTimers(state_);  // timer_create's
  IntervalTimer& timer = state_.signals.real_timer;
  if (!timer.armed()) return;
  const int64_t now = GuestMonotonicNs(state_.monotonic_offset_ns);
  if (now < timer.deadline_ns) return;
  RaiseSignal(state_.signals, SIGALRM, PendingSignalInfo{.code = kSiKernel});
  if (timer.interval_ns == 0) {
    timer = IntervalTimer{};
  } else {
    // The next period after now (periods missed meanwhile raise one signal, as an overrun).
    const int64_t periods = (now - timer.deadline_ns) / timer.interval_ns + 1;
    timer.deadline_ns += periods * timer.interval_ns;
  }
}

void Vm::SyncAlarm() {
  // The interval timer and the POSIX timers.
  const int64_t expiry = NextTimerExpiryNs(state_);
  int64_t deadline = expiry != 0 ? HostFromGuestNs(expiry, state_.monotonic_offset_ns) : 0;
  auto consider = [&deadline](int64_t at) {
    if (at != 0 && (deadline == 0 || at < deadline)) deadline = at;
  };
  consider(retry_stop_at_);
  int64_t slice_at = 0;   // when a busy lane's slice ends while another thread could run
  int64_t slice_end = 0;  // that slice's end (slice_at unless it is over)
  int slice_lane = -1;    // that lane
  if (!state_.threads.others.empty()) {
    // The first deadline of a parked thread.
    if (const int64_t wake = state_.threads.EarliestDeadline(); wake != 0) {
      consider(HostFromGuestNs(wake, state_.monotonic_offset_ns));
    }
    // Threads waiting for host fds: polled again kFdPollNs after the last poll.
    if (state_.threads.WaitsForFds()) consider(fds_polled_ns_ + kFdPollNs);
    // The end of the first slice of a busy lane, while another thread could run.
    // (A slice already over with nothing to retry: at once, so that no stop that did not
    // switch leaves a runnable thread waiting.)
    if (state_.threads.NextRunnable() >= 0 && retry_stop_at_ == 0) {
      int64_t first_end = 0;
      for (size_t lane = 0; lane < lane_busy_.size(); ++lane) {
        // (A busy lane's end may be 0: never set since a restore filled it; over, then.)
        if (lane_busy_[lane] != 0 && (slice_lane < 0 || lane_slice_end_[lane] < first_end)) {
          first_end = lane_slice_end_[lane];
          slice_lane = static_cast<int>(lane);
        }
      }
      slice_end = first_end;
      slice_at = std::max(first_end, HostClockNs(CLOCK_MONOTONIC));
    }
  }
  // The alarm stops the lane whose slice ends when nothing else is due first (any lane serves
  // timers; a slice is that lane's to end).
  const bool slice_first = slice_at != 0 && (deadline == 0 || slice_at < deadline);
  alarm_lane_.store(slice_first ? slice_lane : -1, std::memory_order_relaxed);
  if (!slice_first) {
    armed_slice_end_ = 0;
  } else if (slice_at == slice_end) {
    armed_slice_end_ = slice_end;  // still ahead
  }                                // (else over: armed while it was ahead, or not)
  consider(slice_at);
  if (deadline == alarm_set_for_) return;
  alarm_set_for_ = deadline;
  alarm_.Set(deadline);
}

bool Vm::RestartsAfter(uint64_t nr, int signal) const {
  // VM fork's hypercalls are made again whatever the handler says (sf_join reports EINTR only
  // when the VM stops: docs/sdk.md).
  if (ForkController::IsHypercall(nr)) return true;
  const GuestSigaction& action = state_.signals.actions[signal];
  if (!IsHandler(action.handler)) return true;  // no handler ran: the guest never sees EINTR
  switch (nr) {
    // Never restarted after a handler (Linux returns EINTR for them whatever SA_RESTART says).
    case SYS_nanosleep:
    case SYS_clock_nanosleep:
    case SYS_pause:
    case SYS_rt_sigsuspend:
    case SYS_rt_sigtimedwait:
    case SYS_poll:
    case SYS_ppoll:
    case SYS_select:
    case SYS_pselect6:
    case SYS_epoll_wait:
    case SYS_epoll_pwait:
    case SYS_epoll_pwait2:
      return false;
    default:
      return (action.flags & SA_RESTART) != 0;
  }
}

Result<std::optional<GuestExit>> Vm::EnterHandler(const GuestSiginfo& info,
                                                  const FaultContext& fault) {
  x86::UserCpuState cpu = FLURRY_TRY(CaptureCpu());
  fpu_shape_ = FpuShape{cpu.xsave.size(), cpu.xcr0};
  if (auto pushed = PushSignalFrame(backend_->memory(), state_.signals, info, fault, cpu);
      !pushed) {
    // Linux forces SIGSEGV when it cannot set up a handler's frame (a stack overflow, say).
    return KilledBy(SIGSEGV,
                    fmt::format("guest killed by SIGSEGV: delivering {} at rip {:#x}: {}",
                                SignalName(info.signo), cpu.regs.rip, pushed.error().message()));
  }
  FLURRY_TRY_CTX(backend_->LoadCpu(cpu), "entering a signal handler");
  return std::nullopt;
}

Result<Vm::SignalDelivery> Vm::DeliverSignals() {
  // Every deliverable signal, as Linux before it returns to user mode: each handler's frame
  // goes on top of the previous one (whose handler runs last), under the mask it set.
  SignalState& signals = state_.signals;
  // A thread about to make its partial write again returns its count first.
  if (NextDeliverableSignal(signals) != 0) FLURRY_TRY(EndResumedWrite());
  bool entered = false;
  for (;;) {
    const int signal = NextDeliverableSignal(signals);
    if (signal == 0) {
      if (signals.mask_saved) {  // rt_sigsuspend ended without a handler to restore its mask
        signals.blocked = signals.saved_mask;
        signals.mask_saved = false;
      }
      return SignalDelivery{std::nullopt, entered};
    }
    // A signal sent to this thread is taken before the process's.
    const PendingSignalInfo sender = TakeSignal(state_, signal);
    const uint64_t handler = signals.actions[signal].handler;
    if (signal == SIGKILL || handler == reinterpret_cast<uint64_t>(SIG_DFL)) {
      // Stop and continue have no effect: a guest has no job control (yet).
      if (signal != SIGKILL && DefaultActionOf(signal) != DefaultAction::kTerminate) continue;
      const char* source = sender.code == kSiKernel  ? "from its interval timer"
                           : sender.code == kSiTimer ? "from its POSIX timer"
                                                     : "it raised itself";
      return SignalDelivery{
          KilledBy(signal, fmt::format("guest killed by {} {}", SignalName(signal), source)),
          entered};
    }
    if (!IsHandler(handler)) continue;  // ignored
    auto exit = FLURRY_TRY(EnterHandler(SiginfoOf(signal, sender), FaultContext{}));
    if (exit) return SignalDelivery{std::move(exit), entered};
    entered = true;
  }
}

Result<std::optional<GuestExit>> Vm::HandleFault(const GuestStop& stop) {
  const int signal = stop.signal;
  const bool exception = stop.vector >= 0 && signal > 0 && signal <= SignalState::kSignals;
  // Linux forces a fault's signal: blocked or ignored, it kills; so does no handler.
  if (!exception || !IsHandler(state_.signals.actions[signal].handler) ||
      (state_.signals.blocked & SignalState::Bit(signal)) != 0) {
    return KilledBy(signal, stop.description);
  }
  GuestSiginfo info;
  info.signo = signal;
  info.code = x86::FaultSignalCode(stop.report);
  if (stop.report.vector == 14 && signal == SIGSEGV && stop.report.address >= x86::kUserBase) {
    // Linux's rule, the same on both backends: an address inside a mapping is an access error
    // (PROT_NONE included), anything else a missing mapping. (Below user memory, the system
    // pages keep the error code's answer: a write to the vDSO is an access error.)
    info.code = state_.memory_map.IsMapped(x86::AlignDown(stop.report.address, x86::kPageSize),
                                           x86::kPageSize)
                    ? SEGV_ACCERR
                    : SEGV_MAPERR;
  }
  info.word0 = x86::FaultSignalAddress(stop.report);
  FaultContext fault;
  fault.trapno = static_cast<uint64_t>(stop.report.vector);
  fault.error_code = stop.report.error_code;
  fault.cr2 = stop.report.vector == 14 ? stop.report.address : 0;
  return EnterHandler(info, fault);
}

Result<std::optional<GuestExit>> Vm::SigReturn() {
  // The frame replaces the FPU state whole: what the backend holds now is not needed, only the
  // image's size and XCR0, known from the handler's entry. (Under seccomp, capturing the FPU
  // is a round trip to the stub.)
  x86::UserCpuState cpu;
  if (fpu_shape_) {
    ApplySegmentBases();
    cpu.regs = backend_->regs();
    cpu.xcr0 = fpu_shape_->xcr0;
    cpu.xsave.resize(fpu_shape_->xsave_size);
  } else {
    cpu = FLURRY_TRY(CaptureCpu());
  }
  if (auto popped = PopSignalFrame(backend_->memory(), state_.signals, cpu); !popped) {
    return KilledBy(SIGSEGV, fmt::format("guest killed by SIGSEGV: rt_sigreturn at rip {:#x}: {}",
                                         cpu.regs.rip, popped.error().message()));
  }
  FLURRY_TRY_CTX(backend_->LoadCpu(cpu), "returning from a signal handler");
  // Signals the handler's mask held back run now.
  SignalDelivery next = FLURRY_TRY(DeliverSignals());
  return next.exit;
}

}  // namespace flurry
