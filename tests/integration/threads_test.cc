// Threads (tests/guest/threads.c): each scenario's output and exit status in flurry are those
// of the same program run natively — POSIX threads multiplexed by the VMM on both backends.
#include <gtest/gtest.h>

#include "harness.h"

namespace {
using namespace flurry_test;

class Threads : public ::testing::TestWithParam<const char*> {};

TEST_P(Threads, MatchesNativeRun) {
  ExpectSameAsNative({Guest("threads"), GetParam()}, "flurry: guest killed by SIG");
}

INSTANTIATE_TEST_SUITE_P(Scenarios, Threads,
                         ::testing::Values("reduce", "queue", "tls", "many", "spin", "timed",
                                           "cancel", "signals", "sigwait", "robust", "barrier",
                                           "exit", "detached"));

}  // namespace
