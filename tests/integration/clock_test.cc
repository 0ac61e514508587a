// The guest's clock across snapshots: a restored snapshot's CLOCK_MONOTONIC continues from the
// value captured in its descriptor — the time the snapshot spent stored is not counted
// (docs/design.md, "The guest clock"). Guest: tests/guest/clock_ticker.c. Clones' clocks and
// pids are checked in fork_test.cc (ForkIdentity).
//
// Bounds are generous (seconds): the tests check where the clock continues from, not timing.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "ctl_support.h"
#include "harness.h"

namespace {

using namespace flurry_test;

struct Tick {
  int n = -1;
  long long vdso_ns = -1;
  long long sys_ns = -1;
};

std::vector<Tick> Ticks(const std::string& out) {
  std::vector<Tick> ticks;
  for (const std::string& line : Lines(out)) {
    Tick t;
    if (std::sscanf(line.c_str(), "tick %d vdso %lld sys %lld", &t.n, &t.vdso_ns, &t.sys_ns) == 3) {
      ticks.push_back(t);
    }
  }
  return ticks;
}

// "captured    CLOCK_MONOTONIC S.NNNNNNNNN s at host CLOCK_REALTIME ..." from `descriptor show`.
long long CapturedMonotonicNs(const std::string& show) {
  for (const std::string& line : Lines(show)) {
    unsigned long long seconds = 0, nanoseconds = 0;
    if (std::sscanf(line.c_str(), "captured CLOCK_MONOTONIC %llu.%9llu s", &seconds,
                    &nanoseconds) == 2) {
      return static_cast<long long>(seconds * 1'000'000'000ULL + nanoseconds);
    }
  }
  return -1;
}

TEST(GuestClock, ARestoredSnapshotContinuesFromTheCapturedTime) {
  TempDir dir;
  const std::string socket = (dir.path() / "api.sock").string();
  const fs::path snapshot = dir.path() / "snap";
  Background vm({"run", "--api", socket, Guest("clock_ticker"), "20", "50"});
  ASSERT_TRUE(vm.WaitForOut([](const std::string& out) {
    return out.find("tick 2 ") != std::string::npos;
  })) << vm.out()
      << vm.err();
  ExpectCtlOk(Ctl(socket, {"snapshot", snapshot.string()}));
  const RunResult original = vm.Wait();
  ExpectCleanExit(original, 0);

  auto show = Flurry({"descriptor", "show", (snapshot / "descriptor.fvd").string()});
  ASSERT_EQ(show.exit_code, 0) << show.Describe();
  const long long captured = CapturedMonotonicNs(show.out);
  ASSERT_GT(captured, 0) << show.Describe();
  // The original's ticks before the capture read at most the captured time.
  const std::vector<Tick> before = Ticks(original.out);
  ASSERT_GE(before.size(), 3u) << original.Describe();
  EXPECT_LE(before[0].vdso_ns, captured) << original.Describe() << show.Describe();

  // Stored for a while, then restored: its clock goes on from the captured value.
  constexpr auto kStored = 3s;
  std::this_thread::sleep_for(kStored);
  auto restored = Flurry({"restore", snapshot.string()}, WithDeadline(120));
  ExpectCleanExit(restored, 0);
  const std::vector<Tick> after = Ticks(restored.out);
  ASSERT_FALSE(after.empty()) << restored.Describe();
  EXPECT_GT(after.front().n, 2) << "the snapshot was taken after tick 2" << restored.Describe();
  const long long stored_ns = std::chrono::nanoseconds(kStored).count();
  const long long ran_ns = static_cast<long long>(restored.seconds * 1e9);
  // Each source never goes back, from the captured value on. (The vDSO extrapolates the TSC
  // with a measured frequency, so it may differ from the syscall by microseconds.)
  long long previous_vdso = captured, previous_sys = captured;
  for (const Tick& t : after) {
    SCOPED_TRACE(::testing::Message() << "tick " << t.n << ", captured at " << captured << " ns");
    EXPECT_GE(t.vdso_ns, previous_vdso) << "the vDSO's clock went back" << restored.Describe();
    EXPECT_GE(t.sys_ns, previous_sys) << "the syscall's clock went back" << restored.Describe();
    EXPECT_LT(std::llabs(t.vdso_ns - t.sys_ns), 100'000'000) << restored.Describe();
    previous_vdso = t.vdso_ns;
    previous_sys = t.sys_ns;
  }
  // Guest time since the capture: no more than the restored VM ran, far less than the time
  // the snapshot was stored.
  const long long elapsed = after.front().sys_ns - captured;
  EXPECT_LT(elapsed, stored_ns) << "the time stored was counted" << restored.Describe();
  EXPECT_LT(elapsed, ran_ns + 500'000'000) << restored.Describe();
}

}  // namespace
