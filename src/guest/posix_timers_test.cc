// The rules of POSIX timers over GuestState: firing, one pending signal per timer, overruns,
// the order in which pending instances are taken, deletion.
#include "guest/posix_timers.h"

#include <gtest/gtest.h>

#include <climits>
#include <csignal>

#include "guest/guest_time.h"
#include "guest/signal_state.h"

namespace flurry {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1000 * kMs;
constexpr uint64_t Bit(int signal) { return SignalState::Bit(signal); }

// A guest whose CLOCK_MONOTONIC is far from 0 (deadlines far in the past stay positive).
GuestState Guest() {
  GuestState state;
  state.identity.tid = 7;
  state.monotonic_offset_ns = 1'000'000 * kSecond;
  state.signals.timers.reserve(8);  // AddTimer's references stay valid
  return state;
}

PosixTimer& AddTimer(GuestState& state, int32_t id, int signal, int32_t notify = kSigevSignal,
                     int32_t tid = 0) {
  InsertTimer(state.signals, PosixTimer{.id = id,
                                        .clock = CLOCK_MONOTONIC,
                                        .notify = notify,
                                        .signal = signal,
                                        .tid = tid,
                                        .value = 0x1000u + static_cast<uint64_t>(id)});
  return *FindTimer(state.signals, id);
}

GuestThread Thread(int32_t tid) {
  GuestThread thread;
  thread.tid = tid;
  return thread;
}

int64_t Now(const GuestState& state) { return GuestMonotonicNs(state.monotonic_offset_ns); }

TEST(PosixTimers, APeriodicTimerQueuesOneSignalAndCountsTheMissedPeriods) {
  GuestState state = Guest();
  PosixTimer& timer = AddTimer(state, 0, SIGRTMIN);
  const int64_t start = 5000 * kSecond;
  timer.deadline_ns = start;
  timer.interval_ns = 100 * kMs;
  FireTimer(state, timer, start);
  EXPECT_TRUE(timer.queued);
  EXPECT_EQ(state.signals.pending, Bit(SIGRTMIN));
  EXPECT_EQ(timer.deadline_ns, start) << "re-armed only when its signal is taken";
  // Taken 3.5 periods later: 3 more periods passed meanwhile, the next one is the 4th.
  const PendingSignalInfo info = TakeTimerSignal(timer, start + 350 * kMs);
  EXPECT_EQ(info.code, kSiTimer);
  EXPECT_EQ(info.timer_id, 0);
  EXPECT_EQ(info.value, 0x1000u);
  EXPECT_EQ(info.overrun, 3);
  EXPECT_EQ(timer.overrun, 3);
  EXPECT_FALSE(timer.queued);
  EXPECT_EQ(timer.deadline_ns, start + 400 * kMs);
  // Taken in time: no overrun.
  FireTimer(state, timer, start + 400 * kMs);
  EXPECT_EQ(TakeTimerSignal(timer, start + 450 * kMs).overrun, 0);
  EXPECT_EQ(timer.deadline_ns, start + 500 * kMs);
}

TEST(PosixTimers, AOneShotTimerDisarmsWhenItFires) {
  GuestState state = Guest();
  PosixTimer& timer = AddTimer(state, 3, SIGUSR1);
  timer.deadline_ns = 10 * kSecond;
  FireTimer(state, timer, 11 * kSecond);
  EXPECT_FALSE(timer.armed());
  EXPECT_TRUE(timer.queued);
  // Re-armed and due again while its first signal waits: one signal, overrun 1.
  timer.deadline_ns = 12 * kSecond;
  FireTimer(state, timer, 12 * kSecond);
  EXPECT_FALSE(timer.armed());
  EXPECT_EQ(TakeTimerSignal(timer, 13 * kSecond).overrun, 1);
}

TEST(PosixTimers, TheOverrunSaturatesAtDelaytimerMax) {
  GuestState state = Guest();
  PosixTimer& timer = AddTimer(state, 0, SIGALRM);
  timer.deadline_ns = 1;
  timer.interval_ns = 1;
  FireTimer(state, timer, 1);
  EXPECT_EQ(TakeTimerSignal(timer, int64_t{1} << 40).overrun, INT_MAX);
}

TEST(PosixTimers, DueTimersFireOnceUntilTheirSignalIsTaken) {
  GuestState state = Guest();
  PosixTimer& timer = AddTimer(state, 0, SIGUSR2);
  // Ten and a half periods of 100 s ago.
  timer.deadline_ns = Now(state) - 1050 * kSecond;
  timer.interval_ns = 100 * kSecond;
  EXPECT_EQ(NextTimerExpiryNs(state), timer.deadline_ns);
  FireDueTimers(state);
  EXPECT_TRUE(timer.queued);
  EXPECT_EQ(NextTimerExpiryNs(state), 0) << "a queued periodic timer waits for its signal";
  FireDueTimers(state);
  const PendingSignalInfo info = TakeSignal(state, SIGUSR2);
  EXPECT_EQ(info.code, kSiTimer);
  EXPECT_EQ(info.overrun, 10);
  EXPECT_EQ(state.signals.pending, 0u);
  EXPECT_GT(timer.deadline_ns, Now(state));
  EXPECT_EQ(NextTimerExpiryNs(state), timer.deadline_ns);
}

TEST(PosixTimers, SigevNoneNeverFires) {
  GuestState state = Guest();
  PosixTimer& timer = AddTimer(state, 0, 0, kSigevNone);
  timer.deadline_ns = Now(state) - kSecond;
  EXPECT_EQ(NextTimerExpiryNs(state), 0);
  FireDueTimers(state);
  EXPECT_FALSE(timer.queued);
  EXPECT_EQ(state.signals.pending, 0u);
  EXPECT_EQ(TimerRemaining(timer, Now(state)).value_ns, 0) << "an expired one-shot: 0";
}

TEST(PosixTimers, TheNextExpiryIsTheEarliestOfAllTimers) {
  GuestState state = Guest();
  const int64_t now = Now(state);
  state.signals.real_timer.deadline_ns = now + 50 * kSecond;
  AddTimer(state, 0, SIGUSR1).deadline_ns = now + 30 * kSecond;
  EXPECT_EQ(NextTimerExpiryNs(state), now + 30 * kSecond);
  // A CLOCK_REALTIME timer 10 s from now is 10 s from now on CLOCK_MONOTONIC too.
  PosixTimer& wall = AddTimer(state, 1, SIGUSR1);
  wall.clock = CLOCK_REALTIME;
  wall.deadline_ns = HostClockNs(CLOCK_REALTIME) + 10 * kSecond;
  const int64_t at = NextTimerExpiryNs(state);
  EXPECT_GT(at, now + 9 * kSecond);
  EXPECT_LE(at, Now(state) + 10 * kSecond);
}

TEST(PosixTimers, RemainingTimeCountsFromTheNextPeriod) {
  PosixTimer timer{.notify = kSigevSignal, .signal = SIGALRM};
  EXPECT_EQ(TimerRemaining(timer, 100).value_ns, 0) << "disarmed";
  ArmTimer(timer, 300, 100, false, 1000);
  EXPECT_EQ(timer.deadline_ns, 1300);
  EXPECT_EQ(TimerRemaining(timer, 1000).value_ns, 300);
  EXPECT_EQ(TimerRemaining(timer, 1000).interval_ns, 100);
  EXPECT_EQ(TimerRemaining(timer, 1350).value_ns, 50) << "1400 is next";
  ArmTimer(timer, 500, 0, true, 1000);
  EXPECT_EQ(timer.deadline_ns, 500) << "absolute";
  EXPECT_EQ(TimerRemaining(timer, 1000).value_ns, 1) << "due, not yet fired";
  ArmTimer(timer, 0, 100, false, 1000);
  EXPECT_FALSE(timer.armed());
  EXPECT_EQ(timer.interval_ns, 0) << "a zero value disarms, the interval too";
}

TEST(PosixTimers, ASignalSentBeforeTheTimersIsTakenFirst) {
  GuestState state = Guest();
  state.signals.pending = Bit(SIGRTMIN);  // kill
  state.signals.pending_info[SIGRTMIN] = {.code = 0, .pid = 9};
  PosixTimer& a = AddTimer(state, 0, SIGRTMIN);
  PosixTimer& b = AddTimer(state, 1, SIGRTMIN);
  a.deadline_ns = b.deadline_ns = 1;
  FireTimer(state, b, 5);
  FireTimer(state, a, 5);
  EXPECT_EQ(TakeSignal(state, SIGRTMIN).pid, 9);
  EXPECT_EQ(state.signals.pending, Bit(SIGRTMIN));
  EXPECT_EQ(TakeSignal(state, SIGRTMIN).timer_id, 0) << "then the timers, by id";
  EXPECT_EQ(state.signals.pending, Bit(SIGRTMIN));
  EXPECT_EQ(TakeSignal(state, SIGRTMIN).timer_id, 1);
  EXPECT_EQ(state.signals.pending, 0u);
}

TEST(PosixTimers, AStandardSignalSentAfterATimersIsNotAddedAndTheTimerComesFirst) {
  GuestState state = Guest();
  PosixTimer& timer = AddTimer(state, 0, SIGALRM);
  timer.deadline_ns = 1;
  FireTimer(state, timer, 5);
  RaiseSignal(state.signals, SIGALRM, {.code = 0, .pid = 9});  // finds it pending
  EXPECT_EQ(TakeSignal(state, SIGALRM).code, kSiTimer);
  EXPECT_EQ(state.signals.pending, 0u);
}

TEST(PosixTimers, AThreadTimerSignalsItsThread) {
  GuestState state = Guest();
  state.threads.others.push_back(Thread(8));
  PosixTimer& timer = AddTimer(state, 0, SIGRTMIN, kSigevThreadId, 8);
  timer.deadline_ns = 1;
  FireTimer(state, timer, 5);
  EXPECT_EQ(state.signals.pending | state.signals.thread_pending, 0u);
  EXPECT_EQ(state.threads.others[0].thread_pending, Bit(SIGRTMIN));
  // As thread 8 runs, its pending signals are SignalState's.
  state.identity.tid = 8;
  state.signals.thread_pending = std::exchange(state.threads.others[0].thread_pending, 0);
  EXPECT_EQ(TakeSignal(state, SIGRTMIN).value, 0x1000u);
  EXPECT_EQ(state.signals.thread_pending, 0u);
}

TEST(PosixTimers, AThreadTimerFindsItsThreadParkedWhileTheVmIdles) {
  // Every thread parked: `identity` still names thread 8, the last that ran, but its pending
  // signals are its GuestThread's (SignalState's are stale until a thread is loaded).
  GuestState state = Guest();
  state.identity.tid = 8;
  state.threads.others.push_back(Thread(7));
  state.threads.others.push_back(Thread(8));
  PosixTimer& timer = AddTimer(state, 0, SIGRTMIN, kSigevThreadId, 8);
  timer.deadline_ns = 1;
  FireTimer(state, timer, 5);
  EXPECT_EQ(state.threads.others[1].thread_pending, Bit(SIGRTMIN));
  EXPECT_EQ(state.signals.thread_pending, 0u);
}

TEST(PosixTimers, ATimerOfAThreadThatEndedStops) {
  GuestState state = Guest();
  state.threads.others.push_back(Thread(8));
  PosixTimer& timer = AddTimer(state, 0, SIGRTMIN, kSigevThreadId, 8);
  timer.deadline_ns = 1;
  timer.interval_ns = 10;
  FireTimer(state, timer, 5);
  ForgetThreadTimers(state, 8);
  state.threads.others.clear();
  EXPECT_FALSE(timer.queued);
  FireTimer(state, timer, 20);
  EXPECT_FALSE(timer.armed());
  EXPECT_FALSE(timer.queued);
}

TEST(PosixTimers, AnIgnoredSignalIsNotQueuedAndAPeriodicTimerGoesOn) {
  GuestState state = Guest();
  state.signals.actions[SIGUSR1].handler = reinterpret_cast<uint64_t>(SIG_IGN);
  PosixTimer& timer = AddTimer(state, 0, SIGUSR1);
  timer.deadline_ns = 100;
  timer.interval_ns = 100;
  FireTimer(state, timer, 250);
  EXPECT_FALSE(timer.queued);
  EXPECT_EQ(state.signals.pending, 0u);
  EXPECT_EQ(timer.deadline_ns, 300);
  // Blocked, an ignored signal pends (for sigwait), as RaiseSignal's.
  state.signals.blocked = Bit(SIGUSR1);
  FireTimer(state, timer, 300);
  EXPECT_TRUE(timer.queued);
}

TEST(PosixTimers, DroppedSignalsRearmTheirTimers) {
  GuestState state = Guest();
  PosixTimer& timer = AddTimer(state, 0, SIGUSR1);
  timer.deadline_ns = Now(state) - 1050 * kSecond;
  timer.interval_ns = 100 * kSecond;
  FireDueTimers(state);
  ASSERT_TRUE(timer.queued);
  state.signals.pending = 0;  // what rt_sigaction(SIG_IGN) does, then:
  DropTimerSignals(state, SIGUSR1);
  EXPECT_FALSE(timer.queued);
  EXPECT_GT(timer.deadline_ns, Now(state));
}

TEST(PosixTimers, DeletingATimerTakesItsSignalAway) {
  GuestState state = Guest();
  PosixTimer& timer = AddTimer(state, 0, SIGUSR1);
  AddTimer(state, 1, SIGUSR2);
  timer.deadline_ns = 1;
  FireTimer(state, timer, 5);
  DeleteTimer(state, 0);
  EXPECT_EQ(state.signals.pending, 0u);
  ASSERT_EQ(state.signals.timers.size(), 1u);
  EXPECT_EQ(state.signals.timers[0].id, 1);
  EXPECT_EQ(FreeTimerId(state.signals), 0) << "the lowest free id";
  // A signal sent before the timer's stays.
  state.signals.pending = Bit(SIGUSR2);
  PosixTimer& other = *FindTimer(state.signals, 1);
  other.deadline_ns = 1;
  FireTimer(state, other, 5);
  EXPECT_TRUE(other.behind_plain);
  DeleteAllTimers(state);
  EXPECT_EQ(state.signals.pending, Bit(SIGUSR2));
  EXPECT_TRUE(state.signals.timers.empty());
}

TEST(PosixTimers, IdsAreTheLowestFreeUpToTheLimit) {
  SignalState signals;
  for (int32_t id = 0; id < SignalState::kMaxTimers; ++id) {
    ASSERT_EQ(FreeTimerId(signals), id);
    InsertTimer(signals, PosixTimer{.id = id});
  }
  EXPECT_EQ(FreeTimerId(signals), -1);
  signals.timers.erase(signals.timers.begin() + 17);
  EXPECT_EQ(FreeTimerId(signals), 17);
  InsertTimer(signals, PosixTimer{.id = 17});
  EXPECT_EQ(signals.timers[17].id, 17) << "kept in id order";
}

}  // namespace
}  // namespace flurry
