// Processes inside one VM (tests/guest/processes.c): fork, vfork, wait4/waitid, signals
// between processes, process groups; each scenario's output and exit status in flurry are
// those of the same program run natively, on both backends.
#include <gtest/gtest.h>

#include "harness.h"

namespace {
using namespace flurry_test;

class Processes : public ::testing::TestWithParam<const char*> {};

TEST_P(Processes, MatchesNativeRun) {
  ExpectSameAsNative({Guest("processes"), GetParam()}, "flurry: guest killed by SIG");
}

INSTANTIATE_TEST_SUITE_P(Scenarios, Processes,
                         ::testing::Values("fork", "wait", "signals", "sigchld", "groups", "memory",
                                           "vfork", "threads", "many", "exit", "exec"));

// Children that leave no zombies (SIGCHLD ignored, SA_NOCLDWAIT) and waits by process group
// (tests/guest/processes_reap.c).
class ProcessesReap : public ::testing::TestWithParam<const char*> {};

TEST_P(ProcessesReap, MatchesNativeRun) {
  ExpectSameAsNative({Guest("processes_reap"), GetParam()}, "flurry: guest killed by SIG");
}

INSTANTIATE_TEST_SUITE_P(Scenarios, ProcessesReap,
                         ::testing::Values("ignore", "nocldwait", "pgid"));

}  // namespace
