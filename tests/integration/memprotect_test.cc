// Memory protection (tests/guest/memprotect.c): each scenario's output and exit status in
// flurry are those of the same program run natively.
#include <gtest/gtest.h>

#include "harness.h"

namespace {
using namespace flurry_test;

class MemProtect : public ::testing::TestWithParam<const char*> {};

void ExpectMatchesNativeRun(const std::string& scenario, const RunOptions& options) {
  RunResult native = flurry_test::Run({Guest("memprotect"), scenario});
  ASSERT_FALSE(native.timed_out) << native.Describe();
  RunResult guest = Flurry({"run", Guest("memprotect"), scenario}, options);
  ASSERT_FALSE(guest.timed_out) << guest.Describe();
  ASSERT_TRUE(guest.exited) << "flurry itself died" << guest.Describe();
  EXPECT_EQ(guest.out, native.out) << guest.Describe();
  if (native.exited) {
    EXPECT_EQ(guest.exit_code, native.exit_code) << guest.Describe();
    EXPECT_EQ(guest.err, "") << guest.Describe();
  } else {
    EXPECT_EQ(guest.exit_code, 128 + native.term_signal) << guest.Describe();
    // The fault, described on one line, and the signal it became.
    EXPECT_EQ(Lines(guest.err).size(), 1u) << guest.Describe();
    EXPECT_TRUE(StartsWith(guest.err, "flurry: guest fault: vector 14 page fault"))
        << guest.Describe();
    EXPECT_NE(guest.err.find("-> SIGSEGV"), std::string::npos) << guest.Describe();
  }
}

TEST_P(MemProtect, MatchesNativeRun) { ExpectMatchesNativeRun(GetParam(), {}); }

// Under KVM, the path for hosts whose KVM shadows the guest's page tables (PVM, or no EPT/NPT):
// every protection change also drops KVM's shadow pages. Forced here, where KVM has nested
// paging. (The seccomp backend ignores the variable: the same run twice.)
TEST_P(MemProtect, MatchesNativeRunWithShadowPagingFlushes) {
  RunOptions options;
  options.env = {{"FLURRY_KVM_SHADOW_PAGING", "1"}};
  ExpectMatchesNativeRun(GetParam(), options);
}

INSTANTIATE_TEST_SUITE_P(Scenarios, MemProtect,
                         ::testing::Values("readonly", "none", "hole", "image", "jit", "grow",
                                           "fixed", "errors", "unhandled"));

}  // namespace
