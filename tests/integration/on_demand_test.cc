// Memory on demand (src/memory/lazy_pages.h): a VM restored from a snapshot directory or from
// a page server (flurry ctl SOCK serve, docs/protocols/page_server.md) with its memory
// installed page by page as it is touched. Guest: tests/guest/on_demand.c. Runs once per
// backend ($FLURRY_BACKEND, tests/integration/CMakeLists.txt).
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>

#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "ctl_support.h"
#include "harness.h"
#include "on_demand_support.h"

namespace {

using namespace flurry_test;

constexpr const char* kMiB = "24";

// A parent VM of tests/guest/on_demand.c, paused in its sleep after "ready".
class OnDemandTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = dir_.path() / "root";
    fs::create_directories(root_);
    std::string data(64 << 10, '\0');
    for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<char>(i * 13 + 7);
    WriteFile(root_ / "input", data);
    socket_ = (dir_.path() / "api.sock").string();
    parent_.emplace(std::vector<std::string>{"run", "--dir", root_.string(), "--api", socket_,
                                             Guest("on_demand"), kMiB, "/input", "2"});
    ASSERT_TRUE(parent_->WaitForLine("ready", 120s)) << parent_->out() << parent_->err();
    ExpectCtlOk(Ctl(socket_, {"pause"}));
  }

  // The parent's own result line, after it resumes and ends.
  std::string FinishParent() {
    ExpectCtlOk(Ctl(socket_, {"resume"}));
    auto r = parent_->Wait(180s);
    ExpectCleanExit(r, 0);
    return r.out;
  }

  // `ctl serve` on the parent, then `flurry restore [extra] --api S tcp://ADDR` (no --dir: the
  // recorded path is valid on this host), running once its API socket exists.
  void ServeAndRestore(std::vector<std::string> extra) {
    auto serve = Ctl(socket_, {"serve", "127.0.0.1:0"});
    ExpectCtlOk(serve);
    const auto address = Field(serve.out, "serving");
    const auto server_pid = Field(serve.out, "server pid");
    ASSERT_TRUE(address && server_pid) << serve.Describe();
    server_pid_ = std::stoi(*server_pid);
    restored_socket_ = (dir_.path() / "restored.sock").string();
    std::vector<std::string> args = {"restore", "--api", restored_socket_};
    args.insert(args.end(), extra.begin(), extra.end());
    args.push_back("tcp://" + *address);
    restored_.emplace(args);
    const auto deadline = Clock::now() + 60s;
    while (!Exists(restored_socket_) && Clock::now() < deadline) usleep(10000);
    ASSERT_TRUE(Exists(restored_socket_)) << restored_->err();
  }

  TempDir dir_;
  fs::path root_;
  std::string socket_;
  std::optional<Background> parent_;
  std::optional<Background> restored_;
  std::string restored_socket_;
  pid_t server_pid_ = 0;
};

TEST_F(OnDemandTest, SnapshotDirectoryRestoresOnDemandWithTheSameResult) {
  const fs::path snapshot = dir_.path() / "snap";
  ExpectCtlOk(Ctl(socket_, {"snapshot", snapshot.string()}));
  const std::string expected = ResultLine(FinishParent());
  ASSERT_FALSE(expected.empty());

  auto r =
      Flurry({"restore", "--memory", "on-demand", "--stats", snapshot.string()}, WithDeadline(180));
  ExpectExitWithStats(r);
  EXPECT_EQ(ResultLine(r.out), expected) << r.Describe();
  auto c = OnDemandCounters(r.err);
  ASSERT_FALSE(c.empty()) << r.Describe();
  // The array is fetched; nothing else is.
  EXPECT_GE(c["fetched"], 24.0 * 256) << r.Describe();
  EXPECT_GT(c["fresh"], 0) << "fresh malloc'd memory is never fetched" << r.Describe();
  EXPECT_GT(c["overwritten"], 0) << "read(2) into whole pages is never fetched" << r.Describe();
  EXPECT_GT(c["zero"], 0) << "pages the parent never wrote are never fetched" << r.Describe();
}

// --avoid switches avoidance heuristics off to measure what each saves: the pages are fetched
// instead, and the guest computes the same result (on_demand.c exercises all three).
TEST_F(OnDemandTest, EachAvoidanceHeuristicSwitchedOffGivesTheSameResult) {
  const fs::path snapshot = dir_.path() / "snap";
  ExpectCtlOk(Ctl(socket_, {"snapshot", snapshot.string()}));
  const std::string expected = ResultLine(FinishParent());
  ASSERT_FALSE(expected.empty());
  auto restore = [&](const std::string& avoid) {
    auto r =
        Flurry({"restore", "--memory", "on-demand", "--stats", "--avoid", avoid, snapshot.string()},
               WithDeadline(180));
    ExpectExitWithStats(r);
    EXPECT_EQ(ResultLine(r.out), expected) << "--avoid " << avoid << "\n" << r.Describe();
    return OnDemandCounters(r.err);
  };
  auto all = restore("all");
  auto none = restore("none");
  EXPECT_EQ(none["zero"] + none["fresh"] + none["overwritten"], 0) << "nothing was avoided";
  EXPECT_GT(none["fetched"], all["fetched"]) << "what was avoided is fetched";
  // Each one off alone: its counter is 0, the others still count.
  auto no_zero = restore("fresh,overwritten");
  EXPECT_EQ(no_zero["zero"], 0);
  EXPECT_GT(no_zero["fresh"], 0);
  EXPECT_GT(no_zero["fetched"], all["fetched"]);
  auto no_fresh = restore("zero,overwritten");
  EXPECT_EQ(no_fresh["fresh"], 0);
  EXPECT_GT(no_fresh["overwritten"], 0);
  auto no_overwritten = restore("zero,fresh");
  EXPECT_EQ(no_overwritten["overwritten"], 0);
  EXPECT_GT(no_overwritten["zero"], 0);
  EXPECT_GT(no_overwritten["fetched"], all["fetched"]);
}

TEST_F(OnDemandTest, EagerAndOnDemandRestoresAgree) {
  const fs::path snapshot = dir_.path() / "snap";
  ExpectCtlOk(Ctl(socket_, {"snapshot", snapshot.string()}));
  const std::string expected = ResultLine(FinishParent());
  auto eager =
      Flurry({"restore", "--memory", "eager", "--stats", snapshot.string()}, WithDeadline(180));
  ExpectCleanExit(eager, 0);  // and no counters on stderr: eager memory has none
  EXPECT_EQ(ResultLine(eager.out), expected) << eager.Describe();
  auto lazy = Flurry({"restore", "--memory", "on-demand", "--prefetch", "1", snapshot.string()},
                     WithDeadline(180));
  ExpectCleanExit(lazy, 0);
  EXPECT_EQ(ResultLine(lazy.out), expected) << lazy.Describe();
}

// The page server lives while its VM runs and, after that, while a restored VM is connected
// (it may still fault on the image).
TEST_F(OnDemandTest, ServedVmRestoresOverTcpAndTheServerEndsWithItsLastPeer) {
  ASSERT_NO_FATAL_FAILURE(ServeAndRestore({"--stats"}));
  Background& restored = *restored_;
  auto status = Ctl(restored_socket_, {"status"});
  ExpectCtlOk(status);
  EXPECT_TRUE(Field(status.out, "memory on demand").has_value()) << status.Describe();

  const std::string expected = ResultLine(FinishParent());  // the VM ends; its copy serves on
  auto r = restored.Wait(180s);
  ExpectExitWithStats(r);
  EXPECT_EQ(ResultLine(r.out), expected) << r.Describe();
  auto c = OnDemandCounters(r.err);
  EXPECT_GE(c["fetched"], 24.0 * 256) << r.Describe();
  // Every fetched page crossed the connection, but the all-zero ones (sent as a mask bit).
  EXPECT_GT(c["bytes_received"], (c["fetched"] - c["zero_elided"]) * 4096) << r.Describe();

  // Nobody can fault on the image any more: the server is gone.
  const pid_t pid = server_pid_;
  const auto deadline = Clock::now() + 20s;
  while (kill(pid, 0) == 0 && Clock::now() < deadline) usleep(20000);
  EXPECT_NE(kill(pid, 0), 0) << "page server " << pid << " still runs";
}

TEST_F(OnDemandTest, ALostPageServerEndsTheRestoredVmWithAClearError) {
  ASSERT_NO_FATAL_FAILURE(ServeAndRestore({}));
  Background& restored = *restored_;
  // The restored guest sleeps 2 s before it touches its array: the server dies first.
  ASSERT_EQ(kill(server_pid_, SIGKILL), 0);
  auto r = restored.Wait(120s);
  EXPECT_FALSE(r.timed_out) << "a restored VM must never hang on a lost server" << r.Describe();
  EXPECT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_NE(r.err.find("page server"), std::string::npos) << r.Describe();
  EXPECT_EQ(ResultLine(r.out), "") << "no result from missing memory" << r.Describe();
  FinishParent();
}

// A clone of a VM whose memory is on demand gets all of it: the VM fetches the rest before it
// forks (a forked process would not inherit the userfaultfd registration).
TEST_F(OnDemandTest, AVmRestoredOnDemandCanBeCloned) {
  ASSERT_NO_FATAL_FAILURE(ServeAndRestore({"--stats"}));
  ExpectCtlOk(Ctl(restored_socket_, {"pause"}));
  auto clone = Ctl(restored_socket_, {"clone", "1"});
  ExpectCtlOk(clone);
  auto status = Ctl(restored_socket_, {"status"});
  ExpectCtlOk(status);
  EXPECT_NE(status.out.find("0 pages still to fetch"), std::string::npos) << status.Describe();
  ExpectCtlOk(Ctl(restored_socket_, {"resume"}));
  const std::string expected = ResultLine(FinishParent());
  auto r = restored_->Wait(180s);
  EXPECT_TRUE(r.exited && r.exit_code == 0) << r.Describe();
  EXPECT_EQ(ResultLine(r.out), expected) << r.Describe();
  // The clone's line, "[clone N] sum=...", carries the same result.
  std::string cloned;
  for (const std::string& line : Lines(r.out)) {
    const size_t at = line.find("] sum=");
    if (StartsWith(line, "[clone ") && at != std::string::npos) cloned = line.substr(at + 2);
  }
  EXPECT_EQ(cloned, expected) << r.Describe();
}

TEST(OnDemandCli, BadSourcesAreOneLineErrors) {
  auto no_server = Flurry({"restore", "tcp://127.0.0.1:1"}, WithDeadline(60));
  ExpectInputError(no_server);
  EXPECT_NE(no_server.err.find("127.0.0.1:1"), std::string::npos) << no_server.Describe();
  auto bad_address = Flurry({"restore", "tcp://nowhere"}, WithDeadline(60));
  ExpectInputError(bad_address);
  auto bad_mode = Flurry({"restore", "--memory", "sometimes", "/nonexistent"}, WithDeadline(60));
  ExpectUsageError(bad_mode);
  auto bad_avoid = Flurry({"restore", "--avoid", "zero,nothing", "/nonexistent"}, WithDeadline(60));
  ExpectUsageError(bad_avoid);
  EXPECT_NE(bad_avoid.err.find("--avoid 'zero,nothing'"), std::string::npos)
      << bad_avoid.Describe();
}

}  // namespace
