// Signal delivery (tests/guest/signals.c): each scenario's output and exit status in flurry are
// those of the same program run natively.
#include <gtest/gtest.h>

#include <csignal>
#include <utility>

#include "harness.h"

namespace {
using namespace flurry_test;

class Signals : public ::testing::TestWithParam<const char*> {};

TEST_P(Signals, MatchNativeRun) {
  // Killed by a signal: flurry exits with 128 + signal and says so on one line.
  ExpectSameAsNative({Guest("signals"), GetParam()}, "flurry: guest killed by SIG");
}

INSTANTIATE_TEST_SUITE_P(Scenarios, Signals,
                         ::testing::Values("raise", "mask", "order", "ignore", "segv", "ud2",
                                           "div0", "overflow", "resethand", "term", "alarm",
                                           "itimer", "eintr", "suspend", "timeout", "sigwait",
                                           "suspend2", "int3"));

// A read of stdin that a periodic SIGALRM interrupts: EINTR, or restarted under SA_RESTART.
// The data is fed only once the guest has started reading (it creates the file "reading"),
// however slow the host.
RunResult RunRestart(const std::vector<std::string>& program, const fs::path& marker) {
  const std::string feed =
      "while [ ! -e \"$0\" ]; do sleep 0.05; done; sleep 0.5; echo data; "
      "sleep 0.5; echo more";
  std::vector<std::string> argv = {"/bin/sh", "-c", "(" + feed + ") | \"$@\"", marker.string()};
  argv.insert(argv.end(), program.begin(), program.end());
  return flurry_test::Run(argv);
}

TEST(SignalsRestart, ReadIsInterruptedOrRestarted) {
  TempDir native_dir, guest_dir;
  RunResult native = RunRestart({Guest("signals"), "restart", (native_dir.path() / "reading")},
                                native_dir.path() / "reading");
  ASSERT_TRUE(native.exited) << native.Describe();
  EXPECT_EQ(native.out,
            "without SA_RESTART: read = -1 (Interrupted system call), alarms 1\n"
            "with SA_RESTART: read = 5, alarms 1\n")
      << native.Describe();
  RunResult guest = RunRestart({FlurryBinary(), "run", "--dir", guest_dir.path().string() + ":rw",
                                Guest("signals"), "restart", "/reading"},
                               guest_dir.path() / "reading");
  ASSERT_TRUE(guest.exited) << guest.Describe();
  EXPECT_EQ(guest.exit_code, 0) << guest.Describe();
  EXPECT_EQ(guest.out, native.out) << guest.Describe();
}

// POSIX timers (tests/guest/posix_timers.c): each scenario as natively.
class PosixTimers : public ::testing::TestWithParam<const char*> {};

TEST_P(PosixTimers, MatchNativeRun) {
  RunResult guest = ExpectSameAsNative({Guest("posix_timers"), GetParam()}, "");
  EXPECT_EQ(guest.out.find("FAILED"), std::string::npos) << guest.Describe();
}

INSTANTIATE_TEST_SUITE_P(Scenarios, PosixTimers,
                         ::testing::Values("signal", "periodic", "abstime", "thread",
                                           "sigev_thread", "none", "overrun", "delete", "fork",
                                           "exec", "errors"));

TEST(PosixTimersNative, ScenariosAreWhatTheTestExpects) {
  // The comparison above is only worth something if every check holds natively.
  const std::pair<const char*, const char*> expected[] = {
      {"signal",
       "signal 35 (SIGRTMIN+1 1), si_code -2 (SI_TIMER 1), si_value 1234, si_timerid is the id 1\n"
       "after firing: 0 ns left\n"
       "null sigevent: SIGALRM 1, si_code SI_TIMER 1, si_value is the id 1\n"},
      {"periodic",
       "ticks >= 5: 1; interval 10000000 ns, next in (0, 10 ms]: 1\n"
       "old interval 10000000 ns\n"
       "disarmed: value 0 ns, interval 0 ns\n"},
      {"abstime",
       "old value 0 ns (none armed)\n"
       "left at most 30 ms: 1\n"
       "fired at or after the deadline: 1\n"
       "a past deadline fired: 1\n"},
      {"thread",
       "a tid that is no thread: -1, errno EINVAL 1\n"
       "waiter: signal SIGRTMIN+2 1, si_code SI_TIMER 1, si_value 77\n"
       "main: nothing pending 1\n"},
      {"sigev_thread", "callbacks: 3, value 4242\n"},
      {"none",
       "one-shot: left in (0, 10 s]: 1\n"
       "expired one-shot: 0 ns left\n"
       "periodic: left in (0, 3 ms]: 1, interval 3000000 ns, overrun 0\n"
       "nothing pending: 1\n"},
      {"overrun",
       "si_code SI_TIMER 1, si_value 5, si_overrun >= 11: 1, timer_getoverrun agrees: 1\n"
       "again: si_code SI_TIMER 1\n"},
      {"delete",
       "no tick after timer_delete: 1\n"
       "gettime of a deleted timer: -1, EINVAL 1\n"
       "delete again: -1, EINVAL 1\n"},
      {"fork",
       "child: timer_gettime -1, EINVAL 1\n"
       "child: timer_getoverrun -1, EINVAL 1\n"
       "parent: child exited 1; timer armed 1, interval 1000000000 ns\n"},
      {"exec",
       "after execve: timer_gettime -1, EINVAL 1\n"
       "its signal is not pending: 1; alarm kept: 1\n"},
  };
  for (const auto& [scenario, out] : expected) {
    RunResult native = flurry_test::Run({Guest("posix_timers"), scenario});
    EXPECT_TRUE(native.exited) << native.Describe();
    EXPECT_EQ(native.exit_code, 0) << native.Describe();
    EXPECT_EQ(native.out, out) << native.Describe();
  }
}

TEST(SignalsNative, ScenariosAreWhatTheTestExpects) {
  // The comparison above is only worth something if the scenarios do what they say natively.
  RunResult term = flurry_test::Run({Guest("signals"), "term"});
  EXPECT_FALSE(term.exited);
  EXPECT_EQ(term.term_signal, SIGTERM);
  RunResult segv = flurry_test::Run({Guest("signals"), "segv"});
  EXPECT_EQ(segv.out,
            "caught signal 11, code 1, addr 0x10\ncaught signal 11, code 1, addr 0x18\n"
            "after segv\n");
}

}  // namespace
