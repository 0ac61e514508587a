// Memory protection (tests/guest/memprotect.c): each scenario's output and exit status in
// flurry are those of the same program run natively.
#include <gtest/gtest.h>

#include <csignal>

#include "harness.h"

namespace {
using namespace flurry_test;

class MemProtect : public ::testing::TestWithParam<const char*> {};

void ExpectMatchesNativeRun(const std::string& scenario, const RunOptions& options) {
  // Killed: the fault, described on one line, and the signal it became.
  RunResult guest = ExpectSameAsNative({Guest("memprotect"), scenario},
                                       "flurry: guest fault: vector 14 page fault", options);
  if (guest.exit_code == 128 + SIGSEGV) {
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
                                           "fixed", "errors", "efault", "unhandled"));

}  // namespace
