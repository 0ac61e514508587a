#include "fork/remote_status.h"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>

#include "base/test_temp_dir.h"

namespace flurry {
namespace {

using std::chrono::milliseconds;

TEST(ParseStatusLines, ReadsUpAndDownHostsAndSkipsEverythingElse) {
  auto reports = ParseStatusLines(
      "host host1 up 8 3 25000000000 1000\n"
      "host host2 down failed to connect to all addresses\n"
      "host host3 up 8 x 1 1\n"                     // not a number
      "host host4 up 8 1 1\n"                       // too few
      "host host5 up 8 1 1 1 extra\n"               // too many
      "host host6 up 8 1 99999999999999999999 1\n"  // out of range
      "garbage\n"
      "host host7 sideways\n"
      "host host8 up -1 -2 0 0");  // no final newline: still a line
  ASSERT_EQ(reports.size(), 3u);
  EXPECT_EQ(reports[0].name, "host1");
  EXPECT_TRUE(reports[0].up);
  EXPECT_EQ(reports[0].slots, 8);
  EXPECT_EQ(reports[0].running_clones, 3);
  EXPECT_EQ(reports[0].memory_bytes, 25000000000u);
  EXPECT_EQ(reports[0].free_memory_bytes, 1000u);
  EXPECT_EQ(reports[1].name, "host2");
  EXPECT_FALSE(reports[1].up);
  EXPECT_EQ(reports[1].why_down, "failed to connect to all addresses");
  EXPECT_EQ(reports[2].name, "host8");
  EXPECT_EQ(reports[2].slots, -1);  // the allocator clamps it
}

// A shell script standing in for flurry-remote.
std::string Script(const TestTempDir& dir, const std::string& name, const std::string& body) {
  const std::string path = dir.path() + "/" + name;
  std::ofstream(path) << "#!/bin/sh\n" << body;
  chmod(path.c_str(), 0755);
  return path;
}

TEST(RemoteStatusSource, RunsFlurryRemoteStatusAndReadsItsLines) {
  TestTempDir dir("remote_status_test");
  ASSERT_FALSE(dir.path().empty());
  // It checks its first arguments and reports the deadline it got as the first host's slots.
  const std::string remote = Script(dir, "remote",
                                    "[ \"$1 $2\" = 'status --machine' ] || exit 1\n"
                                    "echo \"host a up $8 1 100 50\"\n"
                                    "echo 'host b down connection refused'\n");
  RemoteStatusSource source(remote, "/x/cluster.json", "client", milliseconds(7),
                            milliseconds(10000));
  EXPECT_EQ(source.CommandLine(),
            (std::vector<std::string>{remote, "status", "--machine", "--cluster", "/x/cluster.json",
                                      "--member", "client", "--deadline-ms", "7"}));
  auto reports = source.Query();
  ASSERT_TRUE(reports) << reports.error().message();
  ASSERT_EQ(reports->size(), 2u);
  EXPECT_TRUE((*reports)[0].up);
  EXPECT_EQ((*reports)[0].slots, 7);
  EXPECT_EQ((*reports)[0].free_memory_bytes, 50u);
  EXPECT_FALSE((*reports)[1].up);
}

TEST(RemoteStatusSource, AProgramThatHangsIsKilledAtTheLimitAndWhatItSaidStands) {
  TestTempDir dir("remote_status_test");
  ASSERT_FALSE(dir.path().empty());
  const std::string remote = Script(dir, "remote",
                                    "echo 'host a up 8 0 100 50'\n"
                                    "printf 'host b up 8'\n"  // cut off: no answer
                                    "exec sleep 60\n");
  RemoteStatusSource source(remote, "c.json", "client", milliseconds(100), milliseconds(500));
  const auto start = std::chrono::steady_clock::now();
  auto reports = source.Query();
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(reports) << reports.error().message();
  ASSERT_EQ(reports->size(), 1u);
  EXPECT_EQ((*reports)[0].name, "a");
  EXPECT_LT(took, std::chrono::seconds(30));  // not the script's 60 s
}

TEST(RemoteStatusSource, FailsWhenTheProgramCannotStart) {
  RemoteStatusSource source("/nonexistent/flurry-remote", "c.json", "client", milliseconds(100),
                            milliseconds(500));
  auto reports = source.Query();
  ASSERT_FALSE(reports);
  EXPECT_NE(reports.error().message().find("/nonexistent/flurry-remote"), std::string::npos);
}

// The spare stand-in in place of the program (SpareStatusSource): scripts that stand in for a
// `flurry-remote spare` that never says it is ready, and one that says so and then ends
// without reading its job. Both fail the query (the allocator then asks its own way) and leave
// the spare stuck (the ForkController drops it). The answering spare itself is tested end to
// end (RemotePlacement.TheSpareAnswersTheAllocatorsStatusQuery).
TEST(SpareStatusSource, ASpareNotReadyInTimeOrGoneWithTheJobFailsAndIsStuck) {
  TestTempDir dir("remote_status_test");
  ASSERT_FALSE(dir.path().empty());
  RemoteCloneConfig config;
  config.cluster_file = "/x/cluster.json";
  config.status_limit = milliseconds(300);
  config.remote_binary = Script(dir, "silent", "exec sleep 30\n");  // fd 3 open, nothing said
  auto silent = SpareStandIn::Spawn(config);
  ASSERT_TRUE(silent) << silent.error().message();
  SpareStatusSource not_ready(*silent, config);
  auto reports = not_ready.Query();
  ASSERT_FALSE(reports);
  EXPECT_NE(reports.error().message().find("not ready"), std::string::npos)
      << reports.error().message();
  EXPECT_TRUE(not_ready.stuck());

  // "FLSR", version 1, 0: the ready message (fork/standin_job.h).
  config.remote_binary = Script(dir, "ready", "printf 'FLSR\\001\\000\\000\\000' >&3\nexit 0\n");
  auto ready = SpareStandIn::Spawn(config);
  ASSERT_TRUE(ready) << ready.error().message();
  SpareStatusSource gone(*ready, config);
  reports = gone.Query();
  ASSERT_FALSE(reports);
  EXPECT_EQ(reports.error().message().find("not ready"), std::string::npos)
      << "it said it was ready: " << reports.error().message();
  EXPECT_TRUE(gone.stuck());
}

}  // namespace
}  // namespace flurry
