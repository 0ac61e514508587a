// Threads (tests/guest/threads.c): each scenario's output and exit status in flurry are those
// of the same program run natively — POSIX threads on both backends, in parallel on their
// lanes (stub threads, vCPUs).
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <string>

#include "harness.h"

namespace {
using namespace flurry_test;

class Threads : public ::testing::TestWithParam<const char*> {};

TEST_P(Threads, MatchesNativeRun) {
  ExpectSameAsNative({Guest("threads"), GetParam()}, "flurry: guest killed by SIG");
}

// The same on three lanes, on any host (on one CPU the lanes take turns on it, as under QEMU):
// the lanes' hand-offs, kicks and gathering give the results one lane gives.
TEST_P(Threads, MatchesNativeRunOnThreeLanes) {
  RunOptions options;
  options.run_flags = {"--cpus", "3"};
  ExpectSameAsNative({Guest("threads"), GetParam()}, "flurry: guest killed by SIG", options);
}

INSTANTIATE_TEST_SUITE_P(Scenarios, Threads,
                         ::testing::Values("reduce", "queue", "tls", "many", "spin", "timed",
                                           "cancel", "signals", "sigwait", "robust", "barrier",
                                           "exit", "detached", "kill_spinner"));

// Why this host cannot show threads running in parallel ("" when it can).
std::string NoParallelism() {
  if (sysconf(_SC_NPROCESSORS_ONLN) < 2) return "the host has one CPU";
  return "";
}

// Two threads of the guest run at the same time on two lanes, as natively on two CPUs.
TEST(ThreadsInParallel, RunAtTheSameTime) {
  if (const std::string why = NoParallelism(); !why.empty()) GTEST_SKIP() << why;
  RunResult r = ExpectSameAsNative({Guest("threads"), "parallel"}, "flurry: guest killed by SIG");
  EXPECT_NE(r.out.find("ran in parallel: yes"), std::string::npos) << r.Describe();
}

// A signal for a thread computing on the third lane reaches it while the threads on the other
// two compute too: the VMM stops that lane, not whichever the kernel picks for a signal to the
// stub (its main thread first, whenever it runs guest code).
TEST(ThreadsInParallel, SignalReachesAThreadComputingOnAnotherLane) {
  if (const std::string why = NoParallelism(); !why.empty()) GTEST_SKIP() << why;
  RunResult r = Flurry({"run", "--cpus", "3", Guest("threads"), "kill_spinner"});
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.Describe();
  EXPECT_EQ(r.out, "handled: yes, in the spinner: yes\n") << r.Describe();
}

// With --cpus 1 they take turns: the program can tell (so the test above can fail).
TEST(ThreadsInParallel, TakeTurnsOnOneCpu) {
  if (const std::string why = NoParallelism(); !why.empty()) GTEST_SKIP() << why;
  RunResult r = Flurry({"run", "--cpus", "1", Guest("threads"), "parallel"});
  ASSERT_TRUE(r.exited && r.exit_code == 0) << r.Describe();
  EXPECT_EQ(r.out, "ran in parallel: no\n") << r.Describe();
}

}  // namespace
