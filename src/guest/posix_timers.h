// POSIX per-process timers (timer_create and friends): the rules over SignalState::timers.
// docs/design.md ("Signals").
//
// As Linux: a timer due raises its signal for the process (SIGEV_SIGNAL) or one thread
// (SIGEV_THREAD_ID), one pending instance per timer; while it is pending the timer does not
// fire again, and taking the signal (delivery, sigwaitinfo) re-arms a periodic timer at its
// first period after now, the periods missed meanwhile being the overrun (si_overrun,
// timer_getoverrun). SignalState's pending bits are the union of every pending instance; a
// queued timer is one of them.
//
// Plain functions over GuestState, on the run thread. The Fire/Take/Arm cores take the time
// explicitly; the others read the clocks.
#pragma once

#include <time.h>

#include <cstdint>

#include "guest/guest_state.h"

namespace flurry {

inline constexpr int32_t kSiTimer = -2;       // SI_TIMER
inline constexpr int32_t kSigevSignal = 0;    // SIGEV_SIGNAL
inline constexpr int32_t kSigevNone = 1;      // SIGEV_NONE
inline constexpr int32_t kSigevThread = 2;    // SIGEV_THREAD: glibc's; the kernel signals
inline constexpr int32_t kSigevThreadId = 4;  // SIGEV_THREAD_ID (with SIGEV_SIGNAL, 0)

// Whether timer_create takes `clock`: CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME and
// CLOCK_TAI.
bool IsTimerClock(clockid_t clock);

PosixTimer* FindTimer(SignalState& signals, int32_t id);
// The lowest id no timer has (-1: kMaxTimers timers exist).
int32_t FreeTimerId(const SignalState& signals);
// Adds `timer` (its id free) in id order.
void InsertTimer(SignalState& signals, const PosixTimer& timer);

// timer_settime: value_ns 0 disarms (the interval too); else the first expiry `value_ns` from
// `now` (relative) or at `value_ns` (absolute), then every `interval_ns`.
void ArmTimer(PosixTimer& timer, int64_t value_ns, int64_t interval_ns, bool absolute, int64_t now);

// timer_gettime: the time to the next expiry and the interval, at `now` on the timer's clock.
// A periodic timer counts from its next period; an expired timer whose signal is not yet
// raised reports 1 ns (as Linux for one not yet fired); 0 is disarmed or (SIGEV_NONE) expired.
struct TimerSetting {
  int64_t value_ns = 0;
  int64_t interval_ns = 0;
};
TimerSetting TimerRemaining(const PosixTimer& timer, int64_t now);

// A due timer (armed, deadline <= now, not SIGEV_NONE) at `now`: its signal becomes pending
// for its target unless the target's disposition ignores it (a periodic timer then re-arms
// past now) or its target thread has gone (the timer stops, as Linux's). A one-shot timer is
// disarmed; a periodic one keeps its deadline until its signal is taken.
void FireTimer(GuestState& state, PosixTimer& timer, int64_t now);
// Fires every due timer (reads the clocks).
void FireDueTimers(GuestState& state);

// The first time a timer (the interval timer, or a POSIX timer that would raise a signal) is
// due, on the guest's CLOCK_MONOTONIC; 0: none.
int64_t NextTimerExpiryNs(const GuestState& state);

// The signal of a queued `timer`, taken at `now`: its siginfo data. A periodic timer whose
// deadline has passed re-arms at its first period after `now`; the periods missed are its
// overrun.
PendingSignalInfo TakeTimerSignal(PosixTimer& timer, int64_t now);

// Takes one pending instance of `signal` for the running thread (its own first, then the
// process's), which must be pending: a signal sent otherwise, or a timer's (SI_TIMER), in the
// order they became pending (timers in id order). Clears the pending bit when none is left.
PendingSignalInfo TakeSignal(GuestState& state, int signal);

// timer_delete: removes the timer and its pending signal, if any.
void DeleteTimer(GuestState& state, int32_t id);
// execve: every timer goes (their pending signals too).
void DeleteAllTimers(GuestState& state);
// `signal` was discarded everywhere (a disposition that ignores it): the timers that had it
// pending forget it; periodic ones re-arm past now.
void DropTimerSignals(GuestState& state, int signal);
// Thread `tid` ends: its timers' pending signals go with it (the timers stop when next due).
void ForgetThreadTimers(GuestState& state, int32_t tid);

}  // namespace flurry
