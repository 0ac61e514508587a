// timer_create, timer_settime, timer_gettime, timer_getoverrun, timer_delete: arguments, ids,
// settings; and the siginfo a timer's signal carries (rt_sigtimedwait).
#include <gtest/gtest.h>

#include <csignal>
#include <cstring>
#include <ctime>

#include "guest/guest_time.h"
#include "guest/posix_timers.h"
#include "guest/syscalls_test_support.h"

namespace flurry {
namespace {

using testing::SyscallHarness;

constexpr uint64_t kEvent = SyscallHarness::kScratch;
constexpr uint64_t kId = SyscallHarness::kScratch + 128;
constexpr uint64_t kNew = SyscallHarness::kScratch + 256;
constexpr uint64_t kOld = SyscallHarness::kScratch + 320;
constexpr uint64_t kInfo = SyscallHarness::kScratch + 512;
constexpr uint64_t kSet = SyscallHarness::kScratch + 1024;
constexpr int64_t kSecond = 1'000'000'000;

struct Sigevent {  // struct sigevent
  uint64_t value;
  int32_t signo;
  int32_t notify;
  int32_t tid = 0;
  int32_t pad[11] = {};
};
struct Itimerspec {
  int64_t interval_sec, interval_nsec, value_sec, value_nsec;
};

class SysPosixTimers : public ::testing::Test {
 protected:
  // timer_create on `clock` with `event` (none: a null sigevent); the id, or -errno.
  int64_t Create(int64_t clock, const Sigevent* event = nullptr) {
    if (event != nullptr) {
      EXPECT_TRUE(h.memory.WriteObject(kEvent, *event).has_value());
    }
    const int64_t r =
        h.Call(SYS_timer_create, static_cast<uint64_t>(clock), event != nullptr ? kEvent : 0, kId);
    return r < 0 ? r : h.memory.ReadObject<int32_t>(kId).value();
  }
  int64_t Settime(int64_t id, int flags, const Itimerspec& spec, uint64_t old = 0) {
    EXPECT_TRUE(h.memory.WriteObject(kNew, spec).has_value());
    return h.Call(SYS_timer_settime, static_cast<uint64_t>(id), static_cast<uint64_t>(flags), kNew,
                  old);
  }
  Itimerspec Gettime(int64_t id) {
    EXPECT_EQ(h.Call(SYS_timer_gettime, static_cast<uint64_t>(id), kOld), 0);
    return h.memory.ReadObject<Itimerspec>(kOld).value();
  }
  SyscallHarness h;
};

TEST_F(SysPosixTimers, ANullSigeventIsSigalrmWithTheIdAsValue) {
  EXPECT_EQ(Create(CLOCK_MONOTONIC), 0);
  EXPECT_EQ(Create(CLOCK_REALTIME), 1);
  const PosixTimer& timer = h.state.signals.timers.at(1);
  EXPECT_EQ(timer.notify, kSigevSignal);
  EXPECT_EQ(timer.signal, SIGALRM);
  EXPECT_EQ(timer.value, 1u);
  EXPECT_EQ(timer.clock, CLOCK_REALTIME);
  EXPECT_FALSE(timer.armed());
  // Deleted, its id is the lowest free again.
  EXPECT_EQ(h.Call(SYS_timer_delete, 0), 0);
  EXPECT_EQ(h.Call(SYS_timer_delete, 0), -EINVAL);
  EXPECT_EQ(Create(CLOCK_BOOTTIME), 0);
  EXPECT_EQ(Create(CLOCK_TAI), 2);
}

TEST_F(SysPosixTimers, ClocksWithoutTimersAreRefused) {
  EXPECT_EQ(Create(CLOCK_PROCESS_CPUTIME_ID), -EINVAL) << "CPU-time clocks: not implemented";
  EXPECT_EQ(Create(CLOCK_THREAD_CPUTIME_ID), -EINVAL);
  EXPECT_EQ(Create(-6), -EINVAL) << "clock_getcpuclockid(1)'s";
  EXPECT_EQ(Create(99), -EINVAL);
  EXPECT_EQ(Create(CLOCK_MONOTONIC_RAW), -EOPNOTSUPP);
  EXPECT_EQ(Create(CLOCK_MONOTONIC_COARSE), -EOPNOTSUPP);
  EXPECT_EQ(Create(CLOCK_REALTIME_ALARM), -EPERM) << "no CAP_WAKE_ALARM";
  EXPECT_EQ(Create(CLOCK_BOOTTIME_ALARM), -EPERM);
  EXPECT_TRUE(h.state.signals.timers.empty());
}

TEST_F(SysPosixTimers, SigeventsAreChecked) {
  Sigevent event{.value = 5, .signo = SIGUSR1, .notify = 3};
  EXPECT_EQ(Create(CLOCK_MONOTONIC, &event), -EINVAL) << "no such notify";
  event.notify = SIGEV_SIGNAL;
  event.signo = 0;
  EXPECT_EQ(Create(CLOCK_MONOTONIC, &event), -EINVAL);
  event.signo = 65;
  EXPECT_EQ(Create(CLOCK_MONOTONIC, &event), -EINVAL);
  event.signo = SIGUSR1;
  event.notify = kSigevThreadId;
  event.tid = 999;
  EXPECT_EQ(Create(CLOCK_MONOTONIC, &event), -EINVAL) << "not a thread of the process";
  event.tid = 0;
  EXPECT_EQ(Create(CLOCK_MONOTONIC, &event), -EINVAL);
  EXPECT_EQ(h.Call(SYS_timer_create, CLOCK_MONOTONIC, 0x10, kId), -EFAULT);
  EXPECT_EQ(h.Call(SYS_timer_create, CLOCK_MONOTONIC, 0, 0x10), -EFAULT);
  EXPECT_TRUE(h.state.signals.timers.empty());

  GuestThread other;
  other.tid = 43;
  h.state.threads.others.push_back(other);
  event.tid = 43;
  EXPECT_EQ(Create(CLOCK_MONOTONIC, &event), 0);
  event.tid = 42;  // the caller
  EXPECT_EQ(Create(CLOCK_MONOTONIC, &event), 1);
  EXPECT_EQ(h.state.signals.timers[0].tid, 43);
  EXPECT_EQ(h.state.signals.timers[0].notify, kSigevThreadId);
  // SIGEV_NONE takes any signal number; SIGEV_THREAD is the kernel's SIGEV_SIGNAL.
  event = Sigevent{.value = 9, .signo = 0, .notify = SIGEV_NONE};
  EXPECT_EQ(Create(CLOCK_MONOTONIC, &event), 2);
  event = Sigevent{.value = 9, .signo = SIGRTMIN, .notify = SIGEV_THREAD};
  EXPECT_EQ(Create(CLOCK_MONOTONIC, &event), 3);
  EXPECT_EQ(h.state.signals.timers[3].notify, kSigevSignal);
  EXPECT_EQ(h.state.signals.timers[3].value, 9u);
}

TEST_F(SysPosixTimers, AtMostKMaxTimers) {
  for (int i = 0; i < SignalState::kMaxTimers; ++i) ASSERT_EQ(Create(CLOCK_MONOTONIC), i);
  EXPECT_EQ(Create(CLOCK_MONOTONIC), -EAGAIN);
}

TEST_F(SysPosixTimers, SettimeArmsAndReportsTheOldSetting) {
  const int64_t id = Create(CLOCK_MONOTONIC);
  EXPECT_EQ(Settime(id, 0, {0, 250'000'000, 10, 0}, kOld), 0);
  const Itimerspec none = h.memory.ReadObject<Itimerspec>(kOld).value();
  EXPECT_EQ(none.value_sec | none.value_nsec | none.interval_sec | none.interval_nsec, 0);
  Itimerspec now = Gettime(id);
  EXPECT_EQ(now.interval_sec, 0);
  EXPECT_EQ(now.interval_nsec, 250'000'000);
  EXPECT_TRUE(now.value_sec == 9 || now.value_sec == 10) << now.value_sec;
  // Replaced: the old value is what was left.
  EXPECT_EQ(Settime(id, 0, {0, 0, 100, 0}, kOld), 0);
  const Itimerspec old = h.memory.ReadObject<Itimerspec>(kOld).value();
  EXPECT_EQ(old.interval_nsec, 250'000'000);
  EXPECT_TRUE(old.value_sec == 9 || old.value_sec == 10) << old.value_sec;
  now = Gettime(id);
  EXPECT_EQ(now.interval_nsec, 0);
  EXPECT_GE(now.value_sec, 99);
  // A zero value disarms.
  EXPECT_EQ(Settime(id, 0, {1, 0, 0, 0}), 0);
  now = Gettime(id);
  EXPECT_EQ(now.value_sec | now.value_nsec | now.interval_sec | now.interval_nsec, 0);
}

TEST_F(SysPosixTimers, AbsoluteTimesAreOnTheGuestsClock) {
  h.state.monotonic_offset_ns = 1'000'000 * kSecond;  // the guest's clock is not the host's
  const int64_t id = Create(CLOCK_MONOTONIC);
  const int64_t at = GuestMonotonicNs(h.state.monotonic_offset_ns) + 60 * kSecond;
  EXPECT_EQ(Settime(id, TIMER_ABSTIME, {0, 0, at / kSecond, at % kSecond}), 0);
  EXPECT_EQ(h.state.signals.timers[0].deadline_ns, at);
  const Itimerspec left = Gettime(id);
  EXPECT_TRUE(left.value_sec == 59 || left.value_sec == 60) << left.value_sec;
  // In the past: due at once (and reported as 1 ns until it fires).
  EXPECT_EQ(Settime(id, TIMER_ABSTIME, {0, 0, 1, 0}), 0);
  EXPECT_EQ(NextTimerExpiryNs(h.state), kSecond);
  const Itimerspec due = Gettime(id);
  EXPECT_EQ(due.value_sec, 0);
  EXPECT_EQ(due.value_nsec, 1);
}

TEST_F(SysPosixTimers, BadSettingsAndIdsAreRefused) {
  const int64_t id = Create(CLOCK_MONOTONIC);
  EXPECT_EQ(Settime(id, 0, {0, 0, 1, kSecond}), -EINVAL);
  EXPECT_EQ(Settime(id, 0, {0, -1, 1, 0}), -EINVAL);
  EXPECT_EQ(Settime(id, 0, {-1, 0, 1, 0}), -EINVAL);
  EXPECT_EQ(h.Call(SYS_timer_settime, id, 0, 0, 0), -EINVAL) << "no new setting";
  EXPECT_EQ(h.Call(SYS_timer_settime, id, 0, 0x10, 0), -EFAULT);
  EXPECT_FALSE(h.state.signals.timers[0].armed());
  EXPECT_EQ(Settime(id + 1, 0, {0, 0, 1, 0}), -EINVAL);
  EXPECT_EQ(Settime(-1, 0, {0, 0, 1, 0}), -EINVAL);
  EXPECT_EQ(h.Call(SYS_timer_gettime, id + 1, kOld), -EINVAL);
  EXPECT_EQ(h.Call(SYS_timer_gettime, id, 0x10), -EFAULT);
  EXPECT_EQ(h.Call(SYS_timer_getoverrun, id + 1), -EINVAL);
  EXPECT_EQ(h.Call(SYS_timer_delete, id + 1), -EINVAL);
  EXPECT_EQ(h.Call(SYS_timer_getoverrun, id), 0);
}

TEST_F(SysPosixTimers, SigwaitinfoGetsTheTimersSiginfo) {
  const Sigevent event{.value = 0xfeedf00dcafe, .signo = SIGRTMIN + 2, .notify = SIGEV_SIGNAL};
  Create(CLOCK_MONOTONIC);  // id 0: the next is 1
  const int64_t id = Create(CLOCK_MONOTONIC, &event);
  ASSERT_EQ(id, 1);
  // Due 10.5 periods of 10 s ago; blocked, its signal waits for sigwaitinfo.
  h.state.monotonic_offset_ns = 1'000'000 * kSecond;
  h.state.signals.blocked = SignalState::Bit(SIGRTMIN + 2);
  PosixTimer& timer = h.state.signals.timers[1];
  timer.deadline_ns = GuestMonotonicNs(h.state.monotonic_offset_ns) - 105 * kSecond;
  timer.interval_ns = 10 * kSecond;
  FireDueTimers(h.state);
  ASSERT_TRUE(timer.queued);
  ASSERT_TRUE(h.memory.WriteObject(kSet, SignalState::Bit(SIGRTMIN + 2)).has_value());
  EXPECT_EQ(h.Call(SYS_rt_sigtimedwait, kSet, kInfo, 0, 8), SIGRTMIN + 2);
  uint8_t info[128];
  ASSERT_TRUE(h.memory.Read(kInfo, info, sizeof info).has_value());
  auto at = [&info]<typename T>(size_t offset, T) {
    T value;
    std::memcpy(&value, info + offset, sizeof value);
    return value;
  };
  EXPECT_EQ(at(0, int32_t{}), SIGRTMIN + 2);       // si_signo
  EXPECT_EQ(at(8, int32_t{}), -2);                 // si_code: SI_TIMER
  EXPECT_EQ(at(16, int32_t{}), 1);                 // si_timerid
  EXPECT_EQ(at(20, int32_t{}), 10);                // si_overrun
  EXPECT_EQ(at(24, uint64_t{}), 0xfeedf00dcafeu);  // si_value
  EXPECT_EQ(h.Call(SYS_timer_getoverrun, 1), 10);
  EXPECT_EQ(h.state.signals.pending, 0u);
  EXPECT_FALSE(timer.queued);
}

}  // namespace
}  // namespace flurry
