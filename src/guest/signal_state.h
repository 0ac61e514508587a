// The rules of a guest's signal state, apart from frames (signal_frame.h): what SIG_DFL does,
// which signals a disposition ignores, which become pending and which is delivered next.
//
// Pure functions over SignalState: the syscall layer and the VMM call them on the vCPU thread.
#pragma once

#include <csignal>
#include <cstdint>

#include "guest/guest_state.h"

namespace flurry {

// Delivered before the others when several are pending (Linux's SYNCHRONOUS_MASK).
inline constexpr uint64_t kSynchronousSignals =
    SignalState::Bit(SIGSEGV) | SignalState::Bit(SIGBUS) | SignalState::Bit(SIGILL) |
    SignalState::Bit(SIGTRAP) | SignalState::Bit(SIGFPE) | SignalState::Bit(SIGSYS);

// What SIG_DFL does with `signal`.
enum class DefaultAction { kTerminate, kIgnore, kStop, kContinue };
DefaultAction DefaultActionOf(int signal);

// Whether `action` throws `signal` away: SIG_IGN, or SIG_DFL whose default ignores it
// (SIGCHLD, SIGURG, SIGWINCH, and SIGCONT, which has nothing to continue). Never SIGKILL or
// SIGSTOP.
bool DispositionIgnores(const GuestSigaction& action, int signal);

// The pending signal of `set` that rt_sigtimedwait or a signalfd read takes next, as Linux's
// dequeue_signal: the running thread's own first, then the process's, each the synchronous
// ones first, then the lowest-numbered; 0 when none of `set` is pending.
int NextSignalToTake(const SignalState& signals, uint64_t set);

// Whether the process's children end without becoming zombies: SIGCHLD set to SIG_IGN, or
// its action has SA_NOCLDWAIT (Linux's rule; wait4 then waits for all of them and fails with
// ECHILD).
bool ChildrenLeaveNoZombies(const SignalState& signals);

// Makes `signal` pending with `info` unless its disposition ignores it and it is not blocked
// (a blocked one pends, for sigwait); a standard signal already pending stays as it was.
void RaiseSignal(SignalState& signals, int signal, const PendingSignalInfo& info);

// RaiseSignal for one thread (tgkill, tkill): pending in `thread_pending` (SignalState's for
// the running thread, a GuestThread's otherwise), under that thread's `blocked` mask.
void RaiseThreadSignal(SignalState& signals, uint64_t& thread_pending, uint64_t blocked, int signal,
                       const PendingSignalInfo& info);

// The signal to deliver next, first the synchronous ones (as Linux dequeues them): the
// lowest-numbered pending signal not blocked (inside rt_sigsuspend: not in its mask), or 0.
int NextDeliverableSignal(const SignalState& signals);

}  // namespace flurry
