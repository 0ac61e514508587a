// Signal delivery (tests/guest/signals.c): each scenario's output and exit status in flurry are
// those of the same program run natively.
#include <gtest/gtest.h>

#include <csignal>

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
