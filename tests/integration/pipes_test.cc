// Pipes (tests/guest/pipes.c), poll (poll.c), eventfd, timerfd, epoll, signalfd (events.c): each
// scenario's output and exit status in flurry are those of the same program run natively —
// pipe ends, eventfds, timerfds and epoll instances as host objects in the VMM, a thread that
// waits on one parked while the others run, SIGPIPE for a write without readers.
#include <gtest/gtest.h>

#include "harness.h"

namespace {
using namespace flurry_test;

class Pipes : public ::testing::TestWithParam<const char*> {};

TEST_P(Pipes, MatchesNativeRun) {
  ExpectSameAsNative({Guest("pipes"), GetParam()}, "flurry: guest killed by SIG");
}

INSTANTIATE_TEST_SUITE_P(Scenarios, Pipes,
                         ::testing::Values("basic", "threads", "nonblock", "eintr", "sigpipe",
                                           "sigpipe-default", "dup", "whole"));

// poll, ppoll, select and pselect over pipe ends (tests/guest/poll.c).
class Poll : public ::testing::TestWithParam<const char*> {};

TEST_P(Poll, MatchesNativeRun) {
  ExpectSameAsNative({Guest("poll"), GetParam()}, "flurry: guest killed by SIG");
}

INSTANTIATE_TEST_SUITE_P(Scenarios, Poll, ::testing::Values("poll", "select"));

// eventfd, timerfd, epoll and signalfd (tests/guest/events.c).
class Events : public ::testing::TestWithParam<const char*> {};

TEST_P(Events, MatchesNativeRun) {
  ExpectSameAsNative({Guest("events"), GetParam()}, "flurry: guest killed by SIG");
}

INSTANTIATE_TEST_SUITE_P(Scenarios, Events,
                         ::testing::Values("eventfd", "timerfd", "epoll", "signalfd"));

}  // namespace
