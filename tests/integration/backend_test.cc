// What depends on the execution backend as a user sees it: which backend runs (flurry ctl
// status), control requests answered while the guest blocks in a syscall, and snapshots that
// move between backends. Runs once per backend ($FLURRY_BACKEND, tests/integration/CMakeLists).
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "ctl_support.h"
#include "harness.h"

namespace {

using namespace flurry_test;

// The backend under test: "kvm", "seccomp", or "" (auto).
std::string BackendUnderTest() {
  const char* backend = std::getenv("FLURRY_BACKEND");
  return backend != nullptr ? backend : "";
}

bool KvmUsable() {
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return false;
  close(fd);
  return true;
}

TEST(BackendStatus, CtlStatusNamesTheBackend) {
  TempDir dir;
  const std::string socket = (dir.path() / "api.sock").string();
  Background vm({"run", "--api", socket, Guest("ctl_ticker"), "10", "50"});
  ASSERT_TRUE(vm.WaitForLine("tick 1")) << vm.out() << vm.err();
  auto status = Ctl(socket, {"status"});
  ExpectCtlOk(status);
  const auto backend = Field(status.out, "backend");
  ASSERT_TRUE(backend.has_value()) << status.Describe();
  if (BackendUnderTest() == "kvm" || BackendUnderTest() == "seccomp") {
    EXPECT_EQ(*backend, BackendUnderTest()) << status.Describe();
  } else {
    EXPECT_TRUE(*backend == "kvm" || *backend == "seccomp") << status.Describe();
  }
  ExpectCleanExit(vm.Wait(), 0);
}

// A guest asleep in nanosleep(2) for longer than the VM may live: the status request is
// answered during the sleep (it used to wait for the sleep to end), and --timeout still ends it.
TEST(BlockedGuest, ControlRequestsAreAnsweredDuringASleep) {
  TempDir dir;
  const std::string socket = (dir.path() / "api.sock").string();
  Background vm({"run", "--timeout", "15s", "--api", socket, Guest("ctl_ticker"), "2", "600000"});
  ASSERT_TRUE(vm.WaitForLine("tick 0")) << vm.out() << vm.err();
  for (int i = 0; i < 3; ++i) {  // more than one interruption of the same sleep
    auto status = Ctl(socket, {"status"});
    ExpectCtlOk(status);
    EXPECT_EQ(Field(status.out, "state"), "running") << status.Describe();
  }
  ExpectCtlOk(Ctl(socket, {"pause"}));
  auto paused = Ctl(socket, {"status"});
  ExpectCtlOk(paused);
  EXPECT_EQ(Field(paused.out, "state"), "paused") << paused.Describe();
  ExpectCtlOk(Ctl(socket, {"resume"}));
  auto r = vm.Wait(60s);
  EXPECT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 124) << "the timeout ends the sleeping guest" << r.Describe();
  EXPECT_EQ(CountLinesStartingWith(r.out, "tick "), 1u)
      << "the interrupted sleep went on: no second tick" << r.Describe();
}

// A snapshot taken while the guest sleeps restores into a guest that makes the sleep again and
// goes on.
TEST(BlockedGuest, SnapshotDuringASleepRestoresAndContinues) {
  TempDir dir;
  const std::string socket = (dir.path() / "api.sock").string();
  const fs::path snapshot = dir.path() / "snap";
  Background vm({"run", "--timeout", "20s", "--api", socket, Guest("ctl_ticker"), "3", "2000"});
  ASSERT_TRUE(vm.WaitForLine("tick 0")) << vm.out() << vm.err();
  auto ctl = Ctl(socket, {"snapshot", snapshot.string()});
  ExpectCtlOk(ctl);
  auto original = vm.Wait(60s);
  ExpectCleanExit(original, 0);
  EXPECT_EQ(original.out, "tick 0\ntick 1\ntick 2\ndone\n") << original.Describe();
  auto restored = Flurry({"restore", snapshot.string()}, WithDeadline(60));
  ExpectCleanExit(restored, 0);
  EXPECT_TRUE(restored.out.ends_with("tick 2\ndone\n")) << restored.Describe();
  EXPECT_EQ(restored.out.find("tick 0"), std::string::npos) << restored.Describe();
}

// A snapshot taken under one backend restores under the other (descriptors carry the
// backend-neutral CPU state). Needs both backends on this host.
TEST(CrossBackend, SnapshotRestoresOnTheOtherBackend) {
  const std::string here = BackendUnderTest();
  if (here != "kvm" && here != "seccomp") GTEST_SKIP() << "FLURRY_BACKEND names no backend";
  if (!KvmUsable()) {
    GTEST_SKIP() << "needs both backends: /dev/kvm is not usable here (the kvm.* run of this "
                    "test, under QEMU where /dev/kvm is missing, covers it)";
  }
  const std::string other = here == "kvm" ? "seccomp" : "kvm";
  TempDir dir;
  const std::string socket = (dir.path() / "api.sock").string();
  const fs::path snapshot = dir.path() / "snap";
  Background vm({"run", "--api", socket, Guest("ctl_ticker"), "30", "20"});
  ASSERT_TRUE(vm.WaitForLine("tick 3")) << vm.out() << vm.err();
  ExpectCtlOk(Ctl(socket, {"snapshot", snapshot.string()}));
  ExpectCleanExit(vm.Wait(), 0);

  auto show = Flurry({"descriptor", "show", (snapshot / "descriptor.fvd").string()});
  EXPECT_NE(show.out.find(here), std::string::npos)
      << "the descriptor names its backend" << show.Describe();
  for (const std::string& backend : {other, here}) {
    auto r = Flurry({"restore", "--backend", backend, snapshot.string()}, WithDeadline(60));
    ExpectCleanExit(r, 0);
    EXPECT_TRUE(r.out.ends_with("tick 29\ndone\n")) << backend << r.Describe();
    EXPECT_EQ(r.out.find("tick 0\n"), std::string::npos) << backend << r.Describe();
  }
}

}  // namespace
