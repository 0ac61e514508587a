#include "guest/posix_timers.h"

#include <algorithm>
#include <climits>
#include <csignal>

#include "guest/guest_time.h"
#include "guest/signal_state.h"

namespace flurry {
namespace {

int64_t SaturatingAdd(int64_t a, int64_t b) {
  int64_t sum;
  return __builtin_add_overflow(a, b, &sum) ? INT64_MAX : sum;
}

int32_t SaturatingOverrun(int64_t overrun) {
  return static_cast<int32_t>(std::clamp<int64_t>(overrun, 0, INT32_MAX));  // DELAYTIMER_MAX
}

// The first period of `timer` (periodic, armed) after `now`, and how many periods that moves.
struct Forward {
  int64_t deadline_ns;
  int64_t periods;
};
Forward NextPeriod(const PosixTimer& timer, int64_t now) {
  if (timer.deadline_ns > now) return {timer.deadline_ns, 0};
  const int64_t periods = (now - timer.deadline_ns) / timer.interval_ns + 1;
  int64_t step;
  if (__builtin_mul_overflow(periods, timer.interval_ns, &step)) return {INT64_MAX, periods};
  return {SaturatingAdd(timer.deadline_ns, step), periods};
}

// Where a timer's signal is pending: the process's bits, or its thread's.
struct Target {
  uint64_t* pending = nullptr;  // null: the thread has gone
  uint64_t blocked = 0;
  bool thread = false;
  int32_t tid = 0;
};

Target TargetOf(GuestState& state, const PosixTimer& timer) {
  SignalState& signals = state.signals;
  if (timer.notify != kSigevThreadId) return {&signals.pending, signals.blocked, false, 0};
  // A parked thread first: while every thread is parked (the VMM idles), `identity` still
  // names the last one that ran, but its state is its GuestThread's.
  if (GuestThread* other = state.threads.Find(timer.tid); other != nullptr) {
    return {&other->thread_pending, other->blocked, true, timer.tid};
  }
  if (timer.tid == state.identity.tid) {
    return {&signals.thread_pending, signals.blocked, true, timer.tid};
  }
  return {nullptr, 0, true, timer.tid};
}

bool SameTarget(const PosixTimer& timer, bool thread, int32_t tid) {
  return thread ? timer.notify == kSigevThreadId && timer.tid == tid
                : timer.notify != kSigevThreadId;
}

// The queued timers of `signal` for one target: the first (lowest id) and how many.
struct Queued {
  PosixTimer* first = nullptr;
  int count = 0;
};
Queued QueuedFor(SignalState& signals, int signal, bool thread, int32_t tid) {
  Queued q;
  for (PosixTimer& t : signals.timers) {
    if (!t.queued || t.signal != signal || !SameTarget(t, thread, tid)) continue;
    if (q.first == nullptr) q.first = &t;
    ++q.count;
  }
  return q;
}

// Whether a signal sent otherwise (not a timer's) is pending as `bit` says: a standard
// instance can only precede the timers' (one sent after them finds its bit set and is
// dropped), and every queued timer records whether it did.
bool PlainPending(uint64_t bits, int signal, const Queued& q) {
  if ((bits & SignalState::Bit(signal)) == 0) return false;
  return q.count == 0 || q.first->behind_plain;
}

}  // namespace

bool IsTimerClock(clockid_t clock) {
  return clock == CLOCK_REALTIME || clock == CLOCK_MONOTONIC || clock == CLOCK_BOOTTIME ||
         clock == CLOCK_TAI;
}

PosixTimer* FindTimer(SignalState& signals, int32_t id) {
  auto it = std::find_if(signals.timers.begin(), signals.timers.end(),
                         [id](const PosixTimer& t) { return t.id == id; });
  return it == signals.timers.end() ? nullptr : &*it;
}

int32_t FreeTimerId(const SignalState& signals) {
  int32_t id = 0;
  for (const PosixTimer& t : signals.timers) {  // ascending ids: the first gap
    if (t.id != id) break;
    ++id;
  }
  return id < SignalState::kMaxTimers ? id : -1;
}

void InsertTimer(SignalState& signals, const PosixTimer& timer) {
  auto at = std::find_if(signals.timers.begin(), signals.timers.end(),
                         [&timer](const PosixTimer& t) { return t.id > timer.id; });
  signals.timers.insert(at, timer);
}

void ArmTimer(PosixTimer& timer, int64_t value_ns, int64_t interval_ns, bool absolute,
              int64_t now) {
  if (value_ns == 0) {
    timer.deadline_ns = 0;
    timer.interval_ns = 0;
    return;
  }
  // An absolute time at or before now is due at once (and never 0, which means disarmed).
  timer.deadline_ns = absolute ? value_ns : SaturatingAdd(now, value_ns);
  timer.interval_ns = interval_ns;
}

TimerSetting TimerRemaining(const PosixTimer& timer, int64_t now) {
  if (!timer.armed()) return {};
  TimerSetting setting{.value_ns = 0, .interval_ns = timer.interval_ns};
  int64_t next = timer.deadline_ns;
  if (timer.interval_ns != 0) next = NextPeriod(timer, now).deadline_ns;
  if (next > now) {
    setting.value_ns = next - now;
  } else if (timer.notify != kSigevNone) {
    setting.value_ns = 1;  // due, its signal not raised yet
  }
  return setting;
}

void FireTimer(GuestState& state, PosixTimer& timer, int64_t now) {
  if (timer.queued) {
    // Re-armed (timer_settime) while the signal of its previous expiry is still pending: Linux
    // counts this expiry as an overrun of that signal.
    timer.queued_overrun = SaturatingOverrun(int64_t{timer.queued_overrun} + 1);
    if (timer.interval_ns == 0) timer.deadline_ns = 0;
    return;
  }
  const Target target = TargetOf(state, timer);
  if (target.pending == nullptr) {  // its thread has ended: Linux's timer stops
    timer.deadline_ns = 0;
    timer.interval_ns = 0;
    return;
  }
  SignalState& signals = state.signals;
  const uint64_t bit = SignalState::Bit(timer.signal);
  if ((target.blocked & bit) == 0 &&
      DispositionIgnores(signals.actions[timer.signal], timer.signal)) {
    // Not raised; a periodic timer goes on (Linux re-arms it past now).
    timer.deadline_ns = timer.interval_ns == 0 ? 0 : NextPeriod(timer, now).deadline_ns;
    return;
  }
  const Queued before = QueuedFor(signals, timer.signal, target.thread, target.tid);
  timer.behind_plain = PlainPending(*target.pending, timer.signal, before);
  timer.queued = true;
  timer.queued_overrun = 0;
  *target.pending |= bit;
  if (timer.interval_ns == 0) timer.deadline_ns = 0;
}

void FireDueTimers(GuestState& state) {
  for (PosixTimer& timer : state.signals.timers) {
    if (!timer.armed() || timer.notify == kSigevNone) continue;
    if (timer.queued && timer.interval_ns != 0) continue;  // re-armed when its signal is taken
    const int64_t now = GuestClockNs(timer.clock, state.monotonic_offset_ns);
    if (now >= timer.deadline_ns) FireTimer(state, timer, now);
  }
}

int64_t NextTimerExpiryNs(const GuestState& state) {
  int64_t first = state.signals.real_timer.armed() ? state.signals.real_timer.deadline_ns : 0;
  int64_t monotonic_now = 0;
  for (const PosixTimer& timer : state.signals.timers) {
    if (!timer.armed() || timer.notify == kSigevNone) continue;
    if (timer.queued && timer.interval_ns != 0) continue;
    int64_t at = timer.deadline_ns;
    if (timer.clock != CLOCK_MONOTONIC) {  // the same distance from now on CLOCK_MONOTONIC
      if (monotonic_now == 0) monotonic_now = GuestMonotonicNs(state.monotonic_offset_ns);
      const int64_t now = GuestClockNs(timer.clock, state.monotonic_offset_ns);
      at = SaturatingAdd(monotonic_now, std::max<int64_t>(timer.deadline_ns - now, 0));
    }
    if (first == 0 || at < first) first = std::max<int64_t>(at, 1);
  }
  return first;
}

PendingSignalInfo TakeTimerSignal(PosixTimer& timer, int64_t now) {
  int64_t overrun = timer.queued_overrun;
  if (timer.armed() && timer.interval_ns != 0 && timer.deadline_ns <= now) {
    const Forward next = NextPeriod(timer, now);
    timer.deadline_ns = next.deadline_ns;
    overrun += next.periods - 1;  // the expiry that raised the signal is not an overrun
  }
  timer.queued = false;
  timer.behind_plain = false;
  timer.queued_overrun = 0;
  timer.overrun = SaturatingOverrun(overrun);
  return PendingSignalInfo{
      .code = kSiTimer, .timer_id = timer.id, .overrun = timer.overrun, .value = timer.value};
}

PendingSignalInfo TakeSignal(GuestState& state, int signal) {
  SignalState& signals = state.signals;
  const uint64_t bit = SignalState::Bit(signal);
  const bool thread = (signals.thread_pending & bit) != 0;
  uint64_t& from = thread ? signals.thread_pending : signals.pending;
  const Queued queued = QueuedFor(signals, signal, thread, state.identity.tid);
  if (PlainPending(from, signal, queued)) {
    if (queued.count == 0) {
      from &= ~bit;
    } else {
      for (PosixTimer& t : signals.timers) {
        if (t.queued && t.signal == signal && SameTarget(t, thread, state.identity.tid)) {
          t.behind_plain = false;
        }
      }
    }
    return signals.pending_info[signal];
  }
  if (queued.count <= 1) from &= ~bit;
  if (queued.first == nullptr) return signals.pending_info[signal];  // (not pending at all)
  PosixTimer& timer = *queued.first;
  return TakeTimerSignal(timer, GuestClockNs(timer.clock, state.monotonic_offset_ns));
}

namespace {

// Removes `timer`'s pending signal without taking it.
void Unqueue(GuestState& state, PosixTimer& timer) {
  if (!timer.queued) return;
  const Target target = TargetOf(state, timer);
  if (target.pending != nullptr) {
    const Queued queued = QueuedFor(state.signals, timer.signal, target.thread, target.tid);
    if (!PlainPending(*target.pending, timer.signal, queued) && queued.count == 1) {
      *target.pending &= ~SignalState::Bit(timer.signal);
    }
  }
  timer.queued = false;
  timer.behind_plain = false;
  timer.queued_overrun = 0;
}

}  // namespace

void DeleteTimer(GuestState& state, int32_t id) {
  PosixTimer* timer = FindTimer(state.signals, id);
  if (timer == nullptr) return;
  Unqueue(state, *timer);
  state.signals.timers.erase(state.signals.timers.begin() + (timer - state.signals.timers.data()));
}

void DeleteAllTimers(GuestState& state) {
  for (PosixTimer& timer : state.signals.timers) Unqueue(state, timer);
  state.signals.timers.clear();
}

void DropTimerSignals(GuestState& state, int signal) {
  for (PosixTimer& timer : state.signals.timers) {
    if (!timer.queued || timer.signal != signal) continue;
    timer.queued = false;
    timer.behind_plain = false;
    timer.queued_overrun = 0;
    if (timer.armed() && timer.interval_ns != 0) {
      timer.deadline_ns =
          NextPeriod(timer, GuestClockNs(timer.clock, state.monotonic_offset_ns)).deadline_ns;
    }
  }
}

void ForgetThreadTimers(GuestState& state, int32_t tid) {
  for (PosixTimer& timer : state.signals.timers) {
    if (timer.notify != kSigevThreadId || timer.tid != tid) continue;
    timer.queued = false;
    timer.behind_plain = false;
    timer.queued_overrun = 0;
  }
}

}  // namespace flurry
