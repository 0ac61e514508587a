// Placement of clones on other hosts: the cluster allocator asks each host's flurryd how it is
// (GetStatus, through the VM's spare stand-in or `flurry-remote status`) at sf_request_ticket
// and grants clones by the hosts' live free slots and free memory; a host whose daemon does
// not answer gets none (docs/design.md, "Clones on other hosts", Placement). Same test cluster
// and rules as remote_clone_test.cc (root only, a cluster of its own per test, removed after
// it).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <regex>
#include <string>
#include <vector>

#include "ctl_support.h"
#include "fork_support.h"
#include "harness.h"
#include "netns_support.h"
#include "process_watch.h"
#include "remote_cluster_support.h"

namespace {

using namespace flurry_test;
using namespace std::chrono_literals;

// How many outcomes exited on each host (cluster_where's result is "NODENAME SUM").
std::map<std::string, int> ExitedPerHost(const std::map<int, Outcome>& outcomes) {
  std::map<std::string, int> per_host;
  for (const auto& [id, o] : outcomes) {
    if (o.kind == kExited && o.status == 0) ++per_host[o.result.substr(0, o.result.find(' '))];
  }
  return per_host;
}

TEST(RemotePlacement, AHostWhoseDaemonIsDownGetsNoClonesAndEveryCloneFinishes) {
  TestCluster cluster(2);
  REQUIRE_CLUSTER(cluster);
  ASSERT_EQ(cluster.Stop(2).exit_code, 0);
  // 4 clones: from the cluster file alone, 2 would go to host2 and be LOST.
  auto r = Flurry(RunArgs(cluster, {"--mem", "64M", Guest("cluster_where"), "4", "0", "1"}),
                  WithDeadline(240));
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("granted 4\n"), std::string::npos) << r.Describe();
  const auto outcomes = Outcomes(r.out);
  EXPECT_EQ(outcomes.size(), 4u) << r.Describe();
  EXPECT_EQ(ExitedPerHost(outcomes), (std::map<std::string, int>{{"host1", 4}})) << r.Describe();
  EXPECT_NE(r.err.find("no clones on host2: its flurryd did not answer"), std::string::npos)
      << r.Describe();
  EXPECT_EQ(r.err.find("lost"), std::string::npos) << r.Describe();
}

// sf_release_ticket in a cluster VM gives the ticket's slots back: a host of 8 slots grants a
// second ticket of 8 only because the first was released (tests/guest/fork_ticket_release.c).
TEST(RemotePlacement, AnUnusedTicketGivenBackFreesItsSlots) {
  TestCluster cluster(1);  // 8 slots
  REQUIRE_CLUSTER(cluster);
  auto r = Flurry(RunArgs(cluster, {"--mem", "64M", Guest("fork_ticket_release"), "8"}),
                  WithDeadline(240));
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, TicketReleaseOutput(8)) << r.Describe();
  EXPECT_EQ(r.err.find("lost"), std::string::npos) << r.Describe();
  ExpectOnlyDaemonsLeft(cluster, 1, 30s);
}

// argv[1] of a process ("" when it has none or is gone).
std::string FirstArgument(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/cmdline");
  std::string arg;
  std::getline(in, arg, '\0');  // argv[0]
  arg.clear();
  std::getline(in, arg, '\0');
  return arg;
}

// The allocator's status query at sf_request_ticket goes to the VM's spare stand-in, which made
// its channels while it waited: no `flurry-remote status` starts for it. A wrapper in
// FLURRY_REMOTE logs the first argument of every flurry-remote the VM starts.
TEST(RemotePlacement, TheSpareAnswersTheAllocatorsStatusQuery) {
  TestCluster cluster(1);
  REQUIRE_CLUSTER(cluster);
  TempDir dir;
  const fs::path log = dir.path() / "started";
  const fs::path wrapper = dir.path() / "flurry-remote";
  const fs::path real = fs::path(FLURRY_BUILD_DIR) / "apps/flurry/flurry-remote";
  WriteFile(wrapper,
            "#!/bin/sh\necho \"$1\" >> " + log.string() + "\nexec " + real.string() + " \"$@\"\n");
  fs::permissions(wrapper, fs::perms::owner_all);
  RunOptions options = WithDeadline(240);
  options.env.push_back({"FLURRY_REMOTE", wrapper.string()});
  auto r =
      Flurry(RunArgs(cluster, {"--mem", "64M", Guest("cluster_where"), "2", "0", "1"}), options);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("granted 2\n"), std::string::npos) << r.Describe();
  EXPECT_EQ(ExitedPerHost(Outcomes(r.out)), (std::map<std::string, int>{{"host1", 2}}))
      << r.Describe();
  const std::vector<std::string> started = Lines(ReadFile(log));
  ASSERT_FALSE(started.empty());
  EXPECT_EQ(started.front(), "spare") << ReadFile(log);
  EXPECT_EQ(std::count(started.begin(), started.end(), "status"), 0) << ReadFile(log);
}

// The stand-in of a cluster VM's first ticket is the spare started with the VM (`flurry-remote
// spare`, fork/remote_clones.h), not a process started on sf_clone's path.
TEST(RemotePlacement, TheFirstTicketsStandInIsTheSpareStartedWithTheVm) {
  TestCluster cluster(1);
  REQUIRE_CLUSTER(cluster);
  Background vm(RunArgs(cluster, {"--mem", "64M", Guest("cluster_where"), "2", "600000", "1"}));
  ASSERT_TRUE(vm.WaitForOut(
      [](const std::string& out) { return Occurrences(out, "on host1 sum=") == 2; }, 180s))
      << vm.out() << vm.err();
  std::vector<std::string> standins;
  for (const auto& [pid, st] : Descendants(vm.pid())) {
    if (st.comm == "flurry-remote" && st.state != 'Z') standins.push_back(FirstArgument(pid));
  }
  EXPECT_EQ(standins, std::vector<std::string>{"spare"}) << vm.err();
  vm.KillProcess();
  vm.Wait(30s);
  ExpectOnlyDaemonsLeft(cluster, 1, 30s);
}

TEST(RemotePlacement, ASecondVmGetsOnlyTheSlotsAnotherFamilyLeavesFree) {
  TestCluster cluster(2);  // 8 slots each
  REQUIRE_CLUSTER(cluster);
  // The first VM's 12 clones (6 per host) run until killed, leaving 2 slots on each host.
  Background first(RunArgs(cluster, {"--mem", "64M", Guest("cluster_where"), "12", "600000", "1"}));
  ASSERT_TRUE(first.WaitForOut(
      [](const std::string& out) {
        return Occurrences(out, "on host1 sum=") == 6 && Occurrences(out, "on host2 sum=") == 6;
      },
      180s))
      << first.out() << first.err();
  // The second asks for 8: from the cluster file alone it would get 8 (4 per host) and the
  // daemons would refuse 4 of them (LOST).
  auto r = Flurry(RunArgs(cluster, {"--mem", "64M", Guest("cluster_where"), "8", "0", "1"}),
                  WithDeadline(240));
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("granted 4\n"), std::string::npos) << r.Describe();
  const auto outcomes = Outcomes(r.out);
  EXPECT_EQ(outcomes.size(), 4u) << r.Describe();
  EXPECT_EQ(ExitedPerHost(outcomes), (std::map<std::string, int>{{"host1", 2}, {"host2", 2}}))
      << r.Describe();
  EXPECT_EQ(r.err.find("lost"), std::string::npos) << r.Describe();
  first.KillProcess();
  first.Wait(30s);
  ExpectOnlyDaemonsLeft(cluster, 2, 30s);
}

}  // namespace
