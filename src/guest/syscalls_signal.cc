// Signal syscalls: dispositions, the blocked mask and the alternate stack are recorded in
// GuestState.signals; signals the guest sends itself become pending there, and the VMM
// delivers them when the syscall returns (src/vmm/vm_signals.cc).
#include <sys/syscall.h>

#include <algorithm>
#include <csignal>
#include <ctime>

#include "guest/guest_time.h"
#include "guest/posix_timers.h"
#include "guest/signal_frame.h"
#include "guest/signal_state.h"
#include "guest/syscall.h"

namespace flurry {
namespace {

constexpr uint64_t kSigsetSize = 8;

constexpr uint64_t Bit(int signal) { return SignalState::Bit(signal); }

// A sigset_t argument, without SIGKILL and SIGSTOP (which no mask holds).
Result<uint64_t> ReadSignalSet(const GuestMemory& memory, uint64_t addr) {
  const uint64_t set = FLURRY_TRY(memory.ReadObject<uint64_t>(addr));
  return set & ~(Bit(SIGKILL) | Bit(SIGSTOP));
}
constexpr int32_t kSiUser = 0;    // SI_USER: kill
constexpr int32_t kSiTkill = -6;  // SI_TKILL: tgkill, tkill

SyscallResult SysRtSigaction(SyscallContext& c, const SyscallArgs& a) {
  const int signal = static_cast<int>(a.arg[0]);
  if (a.arg[3] != kSigsetSize) return SyscallResult::Errno(EINVAL);
  if (signal < 1 || signal > SignalState::kSignals) return SyscallResult::Errno(EINVAL);
  GuestSigaction& slot = c.state.signals.actions[signal];
  GuestSigaction next = slot;
  if (a.arg[1] != 0) {
    if (signal == SIGKILL || signal == SIGSTOP) return SyscallResult::Errno(EINVAL);
    auto act = c.memory.ReadObject<GuestSigaction>(a.arg[1]);
    if (!act) return ErrnoFrom(act.error());
    next = *act;
    next.mask &= ~(Bit(SIGKILL) | Bit(SIGSTOP));
  }
  if (a.arg[2] != 0) {
    if (auto r = c.memory.WriteObject(a.arg[2], slot); !r) return ErrnoFrom(r.error());
  }
  slot = next;
  // A signal set to be ignored is discarded if pending, blocked or not (as Linux does).
  if (DispositionIgnores(next, signal)) {
    c.state.signals.pending &= ~Bit(signal);
    c.state.signals.thread_pending &= ~Bit(signal);
    for (GuestThread& thread : c.state.threads.others) thread.thread_pending &= ~Bit(signal);
    DropTimerSignals(c.state, signal);
  }
  if (signal == SIGCHLD && c.HasProcesses()) {
    c.processes->SetNoZombies(ChildrenLeaveNoZombies(c.state.signals));
  }
  return SyscallResult::Return(0);
}

SyscallResult SysRtSigprocmask(SyscallContext& c, const SyscallArgs& a) {
  if (a.arg[3] != kSigsetSize) return SyscallResult::Errno(EINVAL);
  const int how = static_cast<int>(a.arg[0]);
  uint64_t& blocked = c.state.signals.blocked;
  const uint64_t old = blocked;
  if (a.arg[1] != 0) {
    auto set = ReadSignalSet(c.memory, a.arg[1]);
    if (!set) return ErrnoFrom(set.error());
    const uint64_t value = *set;
    switch (how) {
      case SIG_BLOCK:
        blocked |= value;
        break;
      case SIG_UNBLOCK:
        blocked &= ~value;
        break;
      case SIG_SETMASK:
        blocked = value;
        break;
      default:
        return SyscallResult::Errno(EINVAL);
    }
  }
  if (a.arg[2] != 0) {
    if (auto r = c.memory.WriteObject(a.arg[2], old); !r) {
      blocked = old;
      return ErrnoFrom(r.error());
    }
  }
  return SyscallResult::Return(0);
}

SyscallResult SysSigaltstack(SyscallContext& c, const SyscallArgs& a) {
  const GuestStack old = AltstackAsSeen(c.state.signals, c.rsp);
  if (a.arg[0] != 0) {
    auto stack = c.memory.ReadObject<GuestStack>(a.arg[0]);
    if (!stack) return ErrnoFrom(stack.error());
    if (const int err = SetAltstack(c.state.signals, *stack, c.rsp); err != 0) {
      return SyscallResult::Errno(err);
    }
  }
  if (a.arg[1] != 0) {
    if (auto r = c.memory.WriteObject(a.arg[1], old); !r) return ErrnoFrom(r.error());
  }
  return SyscallResult::Return(0);
}

// kill/tgkill/tkill aimed at the guest itself: the signal becomes pending (unless it would be
// ignored), to be delivered — handler, default action — when this syscall returns. Other
// processes of the VM (kill with a pid, a group, or -1) get it through the process table.
SyscallResult SignalProcesses(SyscallContext& c, int64_t target, int signal, int32_t code) {
  if (signal < 0 || signal > SignalState::kSignals) return SyscallResult::Errno(EINVAL);
  if (target == INT32_MIN) return SyscallResult::Errno(ESRCH);
  const auto t = static_cast<int32_t>(target);
  const int32_t own = c.state.identity.pid;
  int found = 0;
  if (c.HasProcesses() && t != own) found = c.processes->Send(t, signal);
  // The caller itself: its pid, its group (0, or -its group), never -1 (all but the caller).
  const int32_t own_group = c.HasProcesses() ? c.processes->GroupOf(0).value_or(own) : own;
  const bool self = t == own || t == 0 || (t < -1 && -t == own_group);
  if (!self && found == 0) return SyscallResult::Errno(ESRCH);
  if (self && signal != 0) {
    RaiseSignal(c.state.signals, signal, PendingSignalInfo{.code = code, .pid = own});
  }
  return SyscallResult::Return(0);
}

SyscallResult SysKill(SyscallContext& c, const SyscallArgs& a) {
  return SignalProcesses(c, static_cast<int32_t>(a.arg[0]), static_cast<int>(a.arg[1]), kSiUser);
}
// tgkill/tkill: a signal for one thread of the guest (`tgid` -1: any process, tkill).
SyscallResult SignalThread(SyscallContext& c, int32_t tgid, int32_t tid, int signal) {
  if (signal < 0 || signal > SignalState::kSignals || tid <= 0) return SyscallResult::Errno(EINVAL);
  if (tgid != -1 && tgid != c.state.identity.pid) {
    // Another process's main thread (flurry's processes are single-threaded to the others'
    // eyes: their other threads' tids are not in the table).
    if (tgid != tid || !c.HasProcesses() || tid == INT32_MIN) return SyscallResult::Errno(ESRCH);
    return c.processes->Send(tid, signal) > 0 ? SyscallResult::Return(0)
                                              : SyscallResult::Errno(ESRCH);
  }
  const bool self = tid == c.state.identity.tid;
  GuestThread* other = self ? nullptr : c.state.threads.Find(tid);
  if (!self && other == nullptr) return SyscallResult::Errno(ESRCH);
  if (signal == 0) return SyscallResult::Return(0);
  SignalState& signals = c.state.signals;
  const PendingSignalInfo info{.code = kSiTkill, .pid = c.state.identity.pid};
  if (signal == SIGKILL || signal == SIGSTOP) {
    RaiseSignal(signals, signal, info);  // they act on the whole process at once
  } else if (self) {
    RaiseThreadSignal(signals, signals.thread_pending, signals.blocked, signal, info);
  } else {  // the VMM ends a wait the signal interrupts (vm_threads.cc)
    RaiseThreadSignal(signals, other->thread_pending, other->blocked, signal, info);
  }
  return SyscallResult::Return(0);
}

SyscallResult SysTkill(SyscallContext& c, const SyscallArgs& a) {
  return SignalThread(c, -1, static_cast<int32_t>(a.arg[0]), static_cast<int>(a.arg[1]));
}
SyscallResult SysTgkill(SyscallContext& c, const SyscallArgs& a) {
  if (static_cast<int32_t>(a.arg[0]) <= 0) return SyscallResult::Errno(EINVAL);
  return SignalThread(c, static_cast<int32_t>(a.arg[0]), static_cast<int32_t>(a.arg[1]),
                      static_cast<int>(a.arg[2]));
}

SyscallResult SysRtSigpending(SyscallContext& c, const SyscallArgs& a) {
  if (a.arg[1] > kSigsetSize) return SyscallResult::Errno(EINVAL);
  const SignalState& signals = c.state.signals;
  const uint64_t pending = signals.AllPending() & signals.blocked;
  if (auto r = c.memory.Write(a.arg[0], &pending, a.arg[1]); !r) return ErrnoFrom(r.error());
  return SyscallResult::Return(0);
}

// Waits until a signal outside `mask` is pending, or until `deadline_ns` (the guest's
// CLOCK_MONOTONIC; 0: none). The host sleep ends at the nearest deadline (the timers'
// included), on the VMM's kick (EINTR) or after 100 ms (so a kick just before it is
// not lost for long); KeepWaiting then serves what woke it, which raises due timers.
enum class WaitEnd { kSignal, kTimedOut, kGaveUp };  // kGaveUp: stopping, or now a clone
WaitEnd WaitForSignal(SyscallContext& c, uint64_t mask, int64_t deadline_ns = 0) {
  constexpr int64_t kSliceNs = 100'000'000;
  for (;;) {
    if ((c.state.signals.AllPending() & ~mask) != 0) {
      return WaitEnd::kSignal;
    }
    const int64_t now = GuestMonotonicNs(c.state.monotonic_offset_ns);
    if (deadline_ns != 0 && now >= deadline_ns) return WaitEnd::kTimedOut;
    int64_t wait_ns = kSliceNs;
    for (int64_t until : {deadline_ns, NextTimerExpiryNs(c.state)}) {
      if (until != 0) wait_ns = std::clamp<int64_t>(until - now, 0, wait_ns);
    }
    const timespec slice = NsTimespec(wait_ns);
    nanosleep(&slice, nullptr);
    if (!c.KeepWaiting()) {
      return (c.state.signals.AllPending() & ~mask) != 0 ? WaitEnd::kSignal : WaitEnd::kGaveUp;
    }
  }
}

SyscallResult SysPause(SyscallContext& c, const SyscallArgs&) {
  if (!c.state.threads.others.empty()) {  // the others run while this one waits
    c.state.threads.block = ThreadBlock{.wait = ThreadWait::kSignal, .expiry_result = -EINTR};
    return SyscallResult::Block();
  }
  WaitForSignal(c, c.state.signals.blocked);
  return SyscallResult::Errno(EINTR);
}

// rt_sigsuspend: waits with `mask` as the blocked set; the signal that ends the wait is
// delivered under it, and its handler's frame restores the mask of before.
SyscallResult SysRtSigsuspend(SyscallContext& c, const SyscallArgs& a) {
  if (a.arg[1] != kSigsetSize) return SyscallResult::Errno(EINVAL);
  auto set = ReadSignalSet(c.memory, a.arg[0]);
  if (!set) return ErrnoFrom(set.error());
  const uint64_t mask = *set;
  SignalState& signals = c.state.signals;
  if (!c.state.threads.others.empty() && (signals.AllPending() & ~mask) == 0) {
    // Among threads the caller parks with `mask` as its wait's mask; the VMM installs it (and
    // keeps the mask of before for the handler's frame) when a signal ends the wait.
    c.state.threads.block = ThreadBlock{.wait = ThreadWait::kSignal,
                                        .expiry_result = -EINTR,
                                        .suspend = true,
                                        .suspend_mask = mask};
    return SyscallResult::Block();
  }
  // While waiting, `mask` decides what interrupts the wait (the VMM asks NextDeliverableSignal).
  signals.suspended = true;
  signals.suspend_mask = mask;
  const WaitEnd end = WaitForSignal(c, mask);
  signals.suspended = false;
  if (end == WaitEnd::kSignal) {
    signals.saved_mask = signals.blocked;
    signals.mask_saved = true;
    signals.blocked = mask;
  }
  return SyscallResult::Errno(EINTR);
}

// rt_sigtimedwait: takes a pending signal of `set` (normally blocked) without running its
// handler, waiting up to the timeout for one. A signal outside the set that is not blocked
// ends the wait with EINTR (it is delivered).
SyscallResult SysRtSigtimedwait(SyscallContext& c, const SyscallArgs& a) {
  if (a.arg[3] != kSigsetSize) return SyscallResult::Errno(EINVAL);
  auto read_set = ReadSignalSet(c.memory, a.arg[0]);
  if (!read_set) return ErrnoFrom(read_set.error());
  const uint64_t set = *read_set;
  int64_t deadline_ns = 0;
  if (a.arg[2] != 0) {
    auto timeout = c.memory.ReadObject<timespec>(a.arg[2]);
    if (!timeout) return ErrnoFrom(timeout.error());
    if (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1'000'000'000) {
      return SyscallResult::Errno(EINVAL);
    }
    // Saturated: a timeout of centuries waits "forever" rather than overflowing.
    constexpr int64_t kMaxSeconds = INT64_MAX / 1'000'000'000 / 2;
    const timespec bounded{std::min<int64_t>(timeout->tv_sec, kMaxSeconds), timeout->tv_nsec};
    deadline_ns =
        GuestMonotonicNs(c.state.monotonic_offset_ns) + std::max<int64_t>(TimespecNs(bounded), 1);
  }
  SignalState& signals = c.state.signals;
  const uint64_t mask = signals.blocked & ~set;  // what does not end the wait
  if (!c.state.threads.others.empty() && (signals.AllPending() & ~mask) == 0) {
    // Among threads the caller parks (the others run); a signal of `set` makes it call again.
    c.state.threads.block = ThreadBlock{.wait = ThreadWait::kSignal,
                                        .deadline_ns = deadline_ns,
                                        .expiry_result = -EAGAIN,
                                        .signal_set = set};
    return SyscallResult::Block();
  }
  const WaitEnd end = WaitForSignal(c, mask, deadline_ns);
  const int signal = NextSignalToTake(signals, set);
  if (end == WaitEnd::kTimedOut && signal == 0) return SyscallResult::Errno(EAGAIN);
  if (signal == 0) return SyscallResult::Errno(EINTR);  // a handler runs, or the VM stops
  // Taken first, as Linux: a siginfo that cannot be written loses the signal (EFAULT).
  const GuestSiginfo info = SiginfoOf(signal, TakeSignal(c.state, signal));
  if (a.arg[1] != 0) {
    if (auto r = c.memory.WriteObject(a.arg[1], info); !r) return ErrnoFrom(r.error());
  }
  return SyscallResult::Return(signal);
}

}  // namespace

void RegisterSignalSyscalls(SyscallTable& table) {
  table.Register(SYS_rt_sigaction, SysRtSigaction);
  table.Register(SYS_rt_sigprocmask, SysRtSigprocmask);
  table.Register(SYS_sigaltstack, SysSigaltstack);
  table.Register(SYS_kill, SysKill);
  table.Register(SYS_tkill, SysTkill);
  table.Register(SYS_tgkill, SysTgkill);
  table.Register(SYS_rt_sigpending, SysRtSigpending);
  table.Register(SYS_pause, SysPause);
  table.Register(SYS_rt_sigsuspend, SysRtSigsuspend);
  table.Register(SYS_rt_sigtimedwait, SysRtSigtimedwait);
}

}  // namespace flurry
