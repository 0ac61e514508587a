#include "guest/signal_state.h"

namespace flurry {

DefaultAction DefaultActionOf(int signal) {
  switch (signal) {
    case SIGCHLD:
    case SIGURG:
    case SIGWINCH:
      return DefaultAction::kIgnore;
    case SIGCONT:
      return DefaultAction::kContinue;
    case SIGSTOP:
    case SIGTSTP:
    case SIGTTIN:
    case SIGTTOU:
      return DefaultAction::kStop;
    default:
      return DefaultAction::kTerminate;
  }
}

bool DispositionIgnores(const GuestSigaction& action, int signal) {
  if (signal == SIGKILL || signal == SIGSTOP) return false;
  if (action.handler == reinterpret_cast<uint64_t>(SIG_IGN)) return true;
  const DefaultAction fallback = DefaultActionOf(signal);
  return action.handler == reinterpret_cast<uint64_t>(SIG_DFL) &&
         (fallback == DefaultAction::kIgnore || fallback == DefaultAction::kContinue);
}

void RaiseSignal(SignalState& signals, int signal, const PendingSignalInfo& info) {
  const uint64_t bit = SignalState::Bit(signal);
  if ((signals.blocked & bit) == 0 && DispositionIgnores(signals.actions[signal], signal)) return;
  if ((signals.pending & bit) != 0) return;
  signals.pending |= bit;
  signals.pending_info[signal] = info;
}

void RaiseThreadSignal(SignalState& signals, uint64_t& thread_pending, uint64_t blocked, int signal,
                       const PendingSignalInfo& info) {
  const uint64_t bit = SignalState::Bit(signal);
  if ((blocked & bit) == 0 && DispositionIgnores(signals.actions[signal], signal)) return;
  if ((thread_pending & bit) != 0) return;
  thread_pending |= bit;
  signals.pending_info[signal] = info;
}

int NextDeliverableSignal(const SignalState& signals) {
  const uint64_t blocked = signals.suspended ? signals.suspend_mask : signals.blocked;
  const uint64_t ready = signals.AllPending() & ~blocked;
  if (ready == 0) return 0;
  const uint64_t synchronous = ready & kSynchronousSignals;
  return __builtin_ctzll(synchronous != 0 ? synchronous : ready) + 1;
}

int NextSignalToTake(const SignalState& signals, uint64_t set) {
  for (const uint64_t from : {signals.thread_pending & set, signals.pending & set}) {
    if (from == 0) continue;
    const uint64_t synchronous = from & kSynchronousSignals;
    return __builtin_ctzll(synchronous != 0 ? synchronous : from) + 1;
  }
  return 0;
}

bool ChildrenLeaveNoZombies(const SignalState& signals) {
  const GuestSigaction& action = signals.actions[SIGCHLD];
  return action.handler == reinterpret_cast<uint64_t>(SIG_IGN) || (action.flags & SA_NOCLDWAIT);
}

}  // namespace flurry
