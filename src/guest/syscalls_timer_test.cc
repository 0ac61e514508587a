// alarm/setitimer/getitimer, and the waits for a signal (pause, rt_sigsuspend).
#include <gtest/gtest.h>
#include <sys/time.h>

#include <csignal>

#include "guest/signal_frame.h"
#include "guest/syscalls_test_support.h"

namespace flurry {
namespace {

using testing::SyscallHarness;

struct Itimerval {
  int64_t interval_sec, interval_usec, value_sec, value_usec;
};

constexpr uint64_t kNew = SyscallHarness::kScratch;
constexpr uint64_t kOld = SyscallHarness::kScratch + 64;

TEST(SysTimers, SetitimerArmsAndGetitimerCountsDown) {
  SyscallHarness h;
  ASSERT_TRUE(h.memory.WriteObject(kNew, Itimerval{0, 250000, 1, 500000}).has_value());
  EXPECT_EQ(h.Call(SYS_setitimer, ITIMER_REAL, kNew, kOld), 0);
  EXPECT_EQ(h.memory.ReadObject<Itimerval>(kOld).value().value_sec, 0) << "none armed before";
  EXPECT_TRUE(h.state.signals.real_timer.armed());
  EXPECT_EQ(h.state.signals.real_timer.interval_ns, 250'000'000);
  EXPECT_EQ(h.Call(SYS_getitimer, ITIMER_REAL, kOld), 0);
  const Itimerval now = h.memory.ReadObject<Itimerval>(kOld).value();
  EXPECT_EQ(now.interval_usec, 250000);
  const int64_t left_us = now.value_sec * 1000000 + now.value_usec;
  EXPECT_LE(left_us, 1500000);
  EXPECT_GT(left_us, 1000000);
  // A zero value disarms (and the interval goes with it).
  ASSERT_TRUE(h.memory.WriteObject(kNew, Itimerval{0, 250000, 0, 0}).has_value());
  EXPECT_EQ(h.Call(SYS_setitimer, ITIMER_REAL, kNew, 0), 0);
  EXPECT_FALSE(h.state.signals.real_timer.armed());
  EXPECT_EQ(h.state.signals.real_timer.interval_ns, 0);
}

TEST(SysTimers, BadArgumentsAreRefused) {
  SyscallHarness h;
  ASSERT_TRUE(h.memory.WriteObject(kNew, Itimerval{0, 0, 1, 1000000}).has_value());
  EXPECT_EQ(h.Call(SYS_setitimer, ITIMER_REAL, kNew, 0), -EINVAL);
  ASSERT_TRUE(h.memory.WriteObject(kNew, Itimerval{-1, 0, 1, 0}).has_value());
  EXPECT_EQ(h.Call(SYS_setitimer, ITIMER_REAL, kNew, 0), -EINVAL);
  EXPECT_EQ(h.Call(SYS_setitimer, ITIMER_PROF, kNew, 0), -EINVAL) << "CPU-time timers: none";
  EXPECT_EQ(h.Call(SYS_getitimer, 7, kOld), -EINVAL);
  EXPECT_EQ(h.Call(SYS_setitimer, ITIMER_REAL, 0x10, 0), -EFAULT);
  EXPECT_FALSE(h.state.signals.real_timer.armed());
}

TEST(SysTimers, AlarmReturnsTheSecondsLeftRounded) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_alarm, 5), 0);
  EXPECT_EQ(h.Call(SYS_alarm, 0), 5);
  EXPECT_FALSE(h.state.signals.real_timer.armed());
  // Due but not yet raised: at least 1.
  h.state.signals.real_timer.deadline_ns = 1;
  EXPECT_EQ(h.Call(SYS_alarm, 0), 1);
}

TEST(SysSignalWaits, PauseAndSigsuspendEndWithAPendingSignal) {
  SyscallHarness h;
  SignalState& s = h.state.signals;
  s.pending = SignalState::Bit(SIGUSR1);
  EXPECT_EQ(h.Call(SYS_pause), -EINTR);
  // rt_sigsuspend: SIGUSR1 blocked now, not in the mask it waits with.
  s.blocked = SignalState::Bit(SIGUSR1) | SignalState::Bit(SIGINT);
  ASSERT_TRUE(h.memory.WriteObject(kNew, SignalState::Bit(SIGINT)).has_value());
  EXPECT_EQ(h.Call(SYS_rt_sigsuspend, kNew, 8), -EINTR);
  EXPECT_EQ(s.blocked, SignalState::Bit(SIGINT)) << "the signal is delivered under its mask";
  EXPECT_TRUE(s.mask_saved);
  EXPECT_EQ(s.saved_mask, SignalState::Bit(SIGUSR1) | SignalState::Bit(SIGINT));
  EXPECT_EQ(h.Call(SYS_rt_sigsuspend, kNew, 4), -EINVAL);
}

TEST(SysSignalWaits, SigtimedwaitTakesAPendingSignalOfItsSet) {
  SyscallHarness h;
  SignalState& s = h.state.signals;
  s.blocked = SignalState::Bit(SIGUSR1) | SignalState::Bit(SIGUSR2);
  s.pending = SignalState::Bit(SIGUSR2);
  s.pending_info[SIGUSR2] = PendingSignalInfo{.code = -6, .pid = 42};
  constexpr uint64_t kInfo = SyscallHarness::kScratch + 128;
  constexpr uint64_t kTimeout = SyscallHarness::kScratch + 512;
  ASSERT_TRUE(h.memory.WriteObject(kNew, s.blocked).has_value());
  ASSERT_TRUE(h.memory.WriteObject(kTimeout, timespec{0, 0}).has_value());
  EXPECT_EQ(h.Call(SYS_rt_sigtimedwait, kNew, kInfo, kTimeout, 8), SIGUSR2);
  EXPECT_EQ(s.pending, 0u);
  const auto info = h.memory.ReadObject<GuestSiginfo>(kInfo).value();
  EXPECT_EQ(info.signo, SIGUSR2);
  EXPECT_EQ(info.code, -6);
  EXPECT_EQ(info.word0, 42u);
  // Nothing pending, a zero timeout: EAGAIN at once. A bad timeout: EINVAL.
  EXPECT_EQ(h.Call(SYS_rt_sigtimedwait, kNew, kInfo, kTimeout, 8), -EAGAIN);
  ASSERT_TRUE(h.memory.WriteObject(kTimeout, timespec{0, 1'000'000'000}).has_value());
  EXPECT_EQ(h.Call(SYS_rt_sigtimedwait, kNew, kInfo, kTimeout, 8), -EINVAL);
  EXPECT_EQ(h.Call(SYS_rt_sigtimedwait, kNew, kInfo, 0, 4), -EINVAL);
}

}  // namespace
}  // namespace flurry
