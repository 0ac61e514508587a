// Clones on other hosts: a test cluster (scripts/cluster.sh up: network namespaces on a bridge,
// each with its own flurryd and state dir) and a parent VM in this machine's own namespace run
// with --cluster. What crosses to the hosts crosses their network interfaces only: the tests
// check those bytes. Each test makes its own cluster (named by the test process, so the kvm and
// seccomp copies can run at once) and removes it. Root only; skipped with the reason elsewhere.
// Runs once per backend: flurryd passes $FLURRY_BACKEND on to the clones it runs.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "ctl_support.h"
#include "harness.h"
#include "netns_support.h"

namespace {

using namespace flurry_test;
using namespace std::chrono_literals;

// A cluster of `hosts` test hosts, up for the life of the object.
class TestCluster {
 public:
  explicit TestCluster(int hosts) : hosts_(hosts) {
    name_ = "t" + std::to_string(getpid() % 100000);
    subnet_ = "10.89." + std::to_string(getpid() % 250);
    auto r = Script({"up", std::to_string(hosts)});
    up_ = r.exited && r.exit_code == 0;
    if (!up_) {
      error_ = r.Describe();
      return;
    }
    auto lines = Lines(r.out);
    file_ = lines.empty() ? "" : lines.back();
  }
  ~TestCluster() { Script({"down"}); }

  bool up() const { return up_; }
  const std::string& error() const { return error_; }
  const std::string& file() const { return file_; }
  std::string dir() const { return "/run/flurry-cluster-" + name_; }
  std::string netns(int k) const { return name_ + "-host" + std::to_string(k); }

  RunResult Stop(int k) { return Script({"stop", "host" + std::to_string(k)}); }

  // Bytes host k's interface has received so far.
  uint64_t Received(int k) const {
    auto r = Run({IpBinary(), "netns", "exec", netns(k), "/bin/cat",
                  "/sys/class/net/eth0/statistics/rx_bytes"},
                 WithDeadline(30));
    return r.exit_code == 0 ? std::stoull(r.out) : 0;
  }
  // The processes running in host k's namespace (its flurryd and what it started).
  std::vector<pid_t> Pids(int k) const {
    auto r = Run({IpBinary(), "netns", "pids", netns(k)}, WithDeadline(30));
    std::vector<pid_t> pids;
    for (const auto& line : Lines(r.out)) {
      if (!line.empty()) pids.push_back(std::stoi(line));
    }
    return pids;
  }
  // Commands of host k's processes, for failure messages and checks.
  std::vector<std::string> Commands(int k) const {
    std::vector<std::string> commands;
    for (pid_t pid : Pids(k)) {
      commands.push_back(ReadFile("/proc/" + std::to_string(pid) + "/comm"));
    }
    return commands;
  }
  // Drops `percent` % of the packets host k receives (nftables numgen), or says why it cannot.
  std::string DropIncoming(int k, int percent) const {
    const std::string nft = "/usr/sbin/nft";
    if (access(nft.c_str(), X_OK) != 0) return "no " + nft;
    const std::string script =
        "add table inet flurry_loss\n"
        "add chain inet flurry_loss input "
        "{ type filter hook input priority 0; }\n"
        "add rule inet flurry_loss input numgen random mod 100 < " +
        std::to_string(percent) + " counter drop\n";
    auto r = Run({IpBinary(), "netns", "exec", netns(k), nft, "-f", "-"}, WithStdin(script));
    return r.exit_code == 0 ? "" : r.Describe();
  }
  // Packets the DropIncoming rule of host k has dropped.
  uint64_t Dropped(int k) const {
    auto r = Run({IpBinary(), "netns", "exec", netns(k), "/usr/sbin/nft", "list", "table", "inet",
                  "flurry_loss"},
                 WithDeadline(30));
    std::smatch m;
    if (!std::regex_search(r.out, m, std::regex(R"(counter packets (\d+))"))) return 0;
    return std::stoull(m[1]);
  }
  // Shapes what reaches host k (the bridge side of its veth) to `rate` with a token bucket
  // (tc tbf: packets queue, up to `latency`), or says why it cannot. (This kernel has no netem,
  // so no fixed added delay: a slow, queueing link stands in for a distant one.)
  std::string ShapeToHost(int k, const std::string& rate, const std::string& latency) const {
    const std::string tc = "/usr/sbin/tc";
    if (access(tc.c_str(), X_OK) != 0) return "no " + tc;
    auto r = Run({tc, "qdisc", "replace", "dev", HostVeth(k), "root", "tbf", "rate", rate, "burst",
                  "32kbit", "latency", latency},
                 WithDeadline(30));
    return r.exit_code == 0 ? "" : r.Describe();
  }
  // Times the shaping of host k's link held a packet back (tbf "overlimits").
  uint64_t ShapedPackets(int k) const {
    auto r = Run({"/usr/sbin/tc", "-s", "qdisc", "show", "dev", HostVeth(k)}, WithDeadline(30));
    std::smatch m;
    if (!std::regex_search(r.out, m, std::regex(R"(overlimits (\d+))"))) return 0;
    return std::stoull(m[1]);
  }
  pid_t DaemonPid(int k) const {
    for (pid_t pid : Pids(k)) {
      if (ReadFile("/proc/" + std::to_string(pid) + "/comm").starts_with("flurryd")) return pid;
    }
    return 0;
  }

 private:
  RunResult Script(std::vector<std::string> args) const {
    args.insert(args.begin(),
                {"/usr/bin/env", "FLURRY_CLUSTER_NAME=" + name_, "FLURRY_CLUSTER_SUBNET=" + subnet_,
                 std::string("FLURRY_BUILD=") + FLURRY_BUILD_DIR, FLURRY_CLUSTER_SCRIPT});
    return Run(args, WithDeadline(120));
  }
  // The root namespace's end of host k's veth (scripts/cluster.sh names it).
  std::string HostVeth(int k) const { return "fv-" + name_.substr(0, 6) + "-" + std::to_string(k); }
  int hosts_;
  std::string name_, subnet_, file_, error_;
  bool up_ = false;
};

#define REQUIRE_CLUSTER(cluster)                            \
  if (const std::string why = WhyNoNetns(); !why.empty()) { \
    GTEST_SKIP() << why;                                    \
  }                                                         \
  ASSERT_TRUE((cluster).up()) << "scripts/cluster.sh up: " << (cluster).error()

struct Outcome {
  int kind = 0, status = 0, signal = 0;
  std::string result;
};

// cluster_where's "outcome id=I kind=K status=S signal=G result=R" lines, by ID.
std::map<int, Outcome> Outcomes(const std::string& out) {
  std::map<int, Outcome> outcomes;
  static const std::regex line(
      R"(^outcome id=(\d+) kind=(\d+) status=(-?\d+) signal=(\d+) result=(.*)$)");
  for (const auto& text : Lines(out)) {
    std::smatch m;
    if (!std::regex_match(text, m, line)) continue;
    outcomes[std::stoi(m[1])] = {std::stoi(m[2]), std::stoi(m[3]), std::stoi(m[4]), m[5]};
  }
  return outcomes;
}

std::string ParentSum(const std::string& out) {
  static const std::regex line(R"(^parent on \S+ sum=(\d+) join_ms=\d+$)");
  for (const auto& text : Lines(out)) {
    std::smatch m;
    if (std::regex_match(text, m, line)) return m[1];
  }
  return "";
}

constexpr int kExited = 1, kKilled = 3, kLost = 4;  // SF_OUTCOME_*

std::vector<std::string> RunArgs(const TestCluster& cluster, std::vector<std::string> guest) {
  std::vector<std::string> args = {"run", "--cluster", cluster.file()};
  args.insert(args.end(), guest.begin(), guest.end());
  return args;
}

// Waits until the parent's stdout holds every one of `texts`.
bool WaitForAll(Background& parent, std::vector<std::string> texts) {
  return parent.WaitForOut(
      [texts](const std::string& out) {
        for (const auto& t : texts) {
          if (out.find(t) == std::string::npos) return false;
        }
        return true;
      },
      120s);
}

// Waits (up to `limit`) until hosts 1..n run nothing but their daemons, then checks it.
void ExpectOnlyDaemonsLeft(const TestCluster& cluster, int n, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  auto busy = [&] {
    for (int k = 1; k <= n; ++k) {
      if (cluster.Pids(k).size() > 1) return true;
    }
    return false;
  };
  while (std::chrono::steady_clock::now() < deadline && busy()) usleep(100000);
  for (int k = 1; k <= n; ++k) {
    EXPECT_EQ(cluster.Commands(k), std::vector<std::string>{"flurryd\n"}) << "host" << k;
  }
}

TEST(RemoteClones, RunOnTheClusterHostsWithTheParentsMemoryFetchedOverTheirNetwork) {
  TestCluster cluster(3);
  REQUIRE_CLUSTER(cluster);
  std::vector<uint64_t> before;
  for (int k = 1; k <= 3; ++k) before.push_back(cluster.Received(k));
  // 6 clones, each reading the parent's 16 MiB.
  auto r = Flurry(RunArgs(cluster, {"--clone-stats", Guest("cluster_where"), "6", "0", "16"}),
                  WithDeadline(240));
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  // --clone-stats: each clone reports what it fetched — at least the 16 MiB it read.
  static const std::regex stats(
      R"(flurry: clone (\d+): memory on demand: faults=\d+ fetched=(\d+) .* bytes_received=(\d+) )");
  int reports = 0;
  for (const auto& line : Lines(r.err)) {
    std::smatch m;
    if (!std::regex_search(line, m, stats)) {
      ADD_FAILURE() << "unexpected stderr line: " << line;
      continue;
    }
    ++reports;
    EXPECT_GE(std::stoull(m[2]), 4096u) << line;
    EXPECT_GE(std::stoull(m[3]), 16ull << 20) << line;
  }
  EXPECT_EQ(reports, 6) << r.Describe();
  EXPECT_NE(r.out.find("granted 6\n"), std::string::npos) << r.Describe();
  const std::string sum = ParentSum(r.out);
  ASSERT_FALSE(sum.empty()) << r.Describe();
  EXPECT_NE(r.out.find("parent on flurry "), std::string::npos) << "the parent runs here";
  auto outcomes = Outcomes(r.out);
  ASSERT_EQ(outcomes.size(), 6u) << r.Describe();
  std::map<std::string, int> per_host;
  for (const auto& [id, o] : outcomes) {
    EXPECT_EQ(o.kind, kExited) << id << "\n" << r.Describe();
    EXPECT_EQ(o.status, 0) << "clone " << id << " read other memory than the parent's";
    // The result names the host the clone ran on (its uname nodename) and what it read.
    const size_t space = o.result.find(' ');
    ASSERT_NE(space, std::string::npos) << o.result;
    EXPECT_EQ(o.result.substr(space + 1), sum) << id;
    ++per_host[o.result.substr(0, space)];
    // Its output reached the parent's stdout, prefixed, whole.
    EXPECT_NE(r.out.find("[clone " + std::to_string(id) + "] on " + o.result.substr(0, space) +
                         " sum=" + sum + "\n"),
              std::string::npos)
        << r.Describe();
  }
  // Each clone is a copy of the parent's machine: the same pid and ppid, and a clock that went
  // on from the parent's (never before its reading just before sf_clone, never past its reading
  // after the join).
  static const std::regex identity(R"(identity pid=(\d+) ppid=(\d+) since_us=(-?\d+)$)");
  const std::string parent_line = "parent identity";
  int parent_pid = -1, parent_ppid = -1;
  long long parent_after_join_us = -1;
  int clone_identities = 0;
  for (const auto& line : Lines(r.out)) {
    std::smatch m;
    if (!std::regex_search(line, m, identity)) continue;
    if (StartsWith(line, parent_line)) {
      parent_pid = std::stoi(m[1]);
      parent_ppid = std::stoi(m[2]);
      parent_after_join_us = std::stoll(m[3]);
    }
  }
  ASSERT_GT(parent_pid, 0) << r.Describe();
  for (const auto& line : Lines(r.out)) {
    std::smatch m;
    if (StartsWith(line, parent_line) || !std::regex_search(line, m, identity)) continue;
    ++clone_identities;
    EXPECT_EQ(std::stoi(m[1]), parent_pid) << line;
    EXPECT_EQ(std::stoi(m[2]), parent_ppid) << line;
    EXPECT_GE(std::stoll(m[3]), 0) << line;
    EXPECT_LE(std::stoll(m[3]), parent_after_join_us) << line;
  }
  EXPECT_EQ(clone_identities, 6) << r.Describe();
  // Spread by free slots: two clones on each of the three hosts.
  EXPECT_EQ(per_host, (std::map<std::string, int>{{"host1", 2}, {"host2", 2}, {"host3", 2}}))
      << r.Describe();
  // Each host received its clones' memory over its interface: at least 2 x 16 MiB (the page
  // map says which pages exist; none is shared through the file system).
  for (int k = 1; k <= 3; ++k) {
    EXPECT_GE(cluster.Received(k) - before[k - 1], 32ull << 20) << "host" << k;
  }
  // Nothing left running on the hosts but their daemons.
  ExpectOnlyDaemonsLeft(cluster, 3, 20s);
}

// "flurry: clone N: memory on demand: faults=1 fetched=2 ..." lines on stderr, one map each.
std::vector<std::map<std::string, double>> CloneCounters(const std::string& err) {
  std::vector<std::map<std::string, double>> all;
  static const std::regex line(R"(^flurry: clone \d+: memory on demand: (.*)$)");
  for (const auto& text : Lines(err)) {
    std::smatch m;
    if (!std::regex_match(text, m, line)) continue;
    std::map<std::string, double> counters;
    std::istringstream words(m[1].str());
    for (std::string word; words >> word;) {
      const size_t eq = word.find('=');
      if (eq != std::string::npos) counters[word.substr(0, eq)] = std::stod(word.substr(eq + 1));
    }
    all.push_back(counters);
  }
  return all;
}

// --clone-avoid none: what the avoidance heuristics saved is fetched from the parent's host
// instead, and the clones compute the same (tests/guest/avoid_work.c gives each heuristic
// something to save: never-written memory, a fresh malloc, getrandom into an old buffer).
TEST(RemoteClones, CloneAvoidNoneFetchesWhatWasAvoidedAndChangesNoResult) {
  TestCluster cluster(2);
  REQUIRE_CLUSTER(cluster);
  std::map<std::string, std::set<std::string>> results;
  std::map<std::string, std::vector<std::map<std::string, double>>> counters;
  for (const std::string avoid : {"all", "none"}) {
    auto r = Flurry(RunArgs(cluster, {"--clone-stats", "--clone-avoid", avoid, Guest("avoid_work"),
                                      "clone", "2", "8"}),
                    WithDeadline(240));
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    EXPECT_NE(r.out.find("joined 2 failed 0\n"), std::string::npos) << r.Describe();
    for (const auto& line : Lines(r.out)) {
      const size_t at = line.find("] sum=");
      if (StartsWith(line, "[clone ") && at != std::string::npos) {
        results[avoid].insert(line.substr(at + 2));
      }
    }
    counters[avoid] = CloneCounters(r.err);
    EXPECT_EQ(counters[avoid].size(), 2u) << r.Describe();
  }
  ASSERT_EQ(results["all"].size(), 1u) << "both clones compute the same";
  EXPECT_NE(results["all"].begin()->find(" stale=0 "), std::string::npos)
      << *results["all"].begin();
  EXPECT_EQ(results["none"], results["all"]);
  for (size_t i = 0; i < counters["all"].size() && i < counters["none"].size(); ++i) {
    auto& all = counters["all"][i];
    auto& none = counters["none"][i];
    EXPECT_GT(all["zero"], 0);
    EXPECT_GT(all["fresh"], 0);
    EXPECT_GT(all["overwritten"], 0);
    EXPECT_EQ(none["zero"] + none["fresh"] + none["overwritten"], 0);
    // What was zero-filled as fresh or installed as overwritten came from the source too.
    EXPECT_GE(none["fetched"], all["fetched"] + all["fresh"] + all["overwritten"]);
  }
}

TEST(RemoteClones, NestedClonesOnARemoteHostHaveUniqueIds) {
  TestCluster cluster(2);
  REQUIRE_CLUSTER(cluster);
  auto r =
      Flurry(RunArgs(cluster, {Guest("cluster_where"), "2", "0", "1", "1"}), WithDeadline(240));
  ExpectCleanExit(r, 0);
  auto outcomes = Outcomes(r.out);
  ASSERT_EQ(outcomes.size(), 2u) << r.Describe();
  for (const auto& [id, o] : outcomes) {
    EXPECT_EQ(o.kind, kExited) << r.Describe();
    // Clone id's own clone is id * 65536 + 1 and runs on the same host.
    const std::string host = o.result.substr(0, o.result.find(' '));
    EXPECT_NE(r.out.find("[clone " + std::to_string(id) + "] nested outcome id=" +
                         std::to_string(id * 65536 + 1) + " kind=1 result=" + host + "\n"),
              std::string::npos)
        << r.Describe();
  }
}

TEST(RemoteClones, AKilledHostsClonesAreLostAndTheOthersFinish) {
  TestCluster cluster(2);
  REQUIRE_CLUSTER(cluster);
  // Two clones per host, each sleeping 4 s after it has read its memory.
  Background parent(RunArgs(cluster, {Guest("cluster_where"), "4", "4000", "1"}));
  ASSERT_TRUE(parent.WaitForOut(
      [](const std::string& out) {
        return std::regex_search(out, std::regex("on host2 sum=[^]*on host2 sum="));
      },
      120s))
      << parent.out() << parent.err();
  auto stop = cluster.Stop(2);
  ASSERT_EQ(stop.exit_code, 0) << stop.Describe();
  auto r = parent.Wait(120s);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();  // stderr says which clones were lost
  auto outcomes = Outcomes(r.out);
  ASSERT_EQ(outcomes.size(), 4u) << r.Describe();
  int lost = 0, exited = 0;
  for (const auto& [id, o] : outcomes) {
    if (o.kind == kLost) ++lost;
    if (o.kind == kExited && o.result.starts_with("host1 ")) ++exited;
  }
  EXPECT_EQ(lost, 2) << r.Describe();
  EXPECT_EQ(exited, 2) << r.Describe();
  EXPECT_NE(r.err.find("on host2 lost"), std::string::npos) << r.Describe();
  EXPECT_TRUE(cluster.Pids(2).empty()) << "host2 was stopped";
}

TEST(RemoteClones, SfKillEndsRemoteClones) {
  TestCluster cluster(2);
  REQUIRE_CLUSTER(cluster);
  // fork_kill join: 4 clones that never end by themselves; the parent kills and joins them.
  auto r = Flurry(RunArgs(cluster, {Guest("fork_kill"), "join"}), WithDeadline(240));
  ExpectCleanExit(r, 0);
  for (int id = 1; id <= 4; ++id) {
    EXPECT_NE(r.out.find("clone " + std::to_string(id) + ": killed\n"), std::string::npos)
        << r.Describe();
  }
  // Their VMMs on the hosts are gone (flurryd saw the stand-ins go and killed them).
  ExpectOnlyDaemonsLeft(cluster, 2, 20s);
}

TEST(RemoteClones, TheParentDyingEndsItsRemoteClones) {
  TestCluster cluster(2);
  REQUIRE_CLUSTER(cluster);
  Background parent(RunArgs(cluster, {Guest("cluster_where"), "2", "600000", "1"}));
  ASSERT_TRUE(WaitForAll(parent, {"on host1 sum=", "on host2 sum="}))
      << parent.out() << parent.err();
  ASSERT_GT(cluster.Pids(1).size(), 1u);
  parent.KillProcess();  // the VMM dies at once; its stand-ins and page server must follow
  parent.Wait(30s);
  ExpectOnlyDaemonsLeft(cluster, 2, 30s);
}

TEST(RemoteClones, SigtermEndsADaemonsClonesAsLostAndLeavesNothingBehind) {
  TestCluster cluster(2);
  REQUIRE_CLUSTER(cluster);
  Background parent(RunArgs(cluster, {Guest("cluster_where"), "2", "600000", "1"}));
  ASSERT_TRUE(WaitForAll(parent, {"on host1 sum=", "on host2 sum="}))
      << parent.out() << parent.err();
  for (int k = 1; k <= 2; ++k) {
    const pid_t daemon = cluster.DaemonPid(k);
    ASSERT_GT(daemon, 0);
    ASSERT_EQ(kill(daemon, SIGTERM), 0);
  }
  auto r = parent.Wait(60s);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  auto outcomes = Outcomes(r.out);
  ASSERT_EQ(outcomes.size(), 2u) << r.Describe();
  for (const auto& [id, o] : outcomes) EXPECT_EQ(o.kind, kLost) << r.Describe();
  EXPECT_NE(r.err.find("flurryd was stopped"), std::string::npos) << r.Describe();
  // The daemons finish their calls (the outcomes above) and exit; give them a moment.
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  while (std::chrono::steady_clock::now() < deadline &&
         (!cluster.Pids(1).empty() || !cluster.Pids(2).empty())) {
    usleep(50000);
  }
  for (int k = 1; k <= 2; ++k) {
    EXPECT_TRUE(cluster.Pids(k).empty())
        << "host" << k << ": " << ::testing::PrintToString(cluster.Commands(k));
    const fs::path state = fs::path(cluster.dir()) / "state" / ("host" + std::to_string(k));
    EXPECT_TRUE(fs::is_empty(state)) << state << " keeps something";
  }
}

// The page servers a VMM process started (its children named flurry-pages).
std::vector<pid_t> PageServersOf(pid_t parent) {
  std::vector<pid_t> servers;
  for (const auto& entry : fs::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const std::string stat = ReadFile(entry.path() / "stat");
    const size_t close = stat.rfind(')');
    if (close == std::string::npos || stat.find("(flurry-pages)") == std::string::npos) continue;
    std::istringstream rest(stat.substr(close + 2));
    std::string state;
    pid_t ppid = 0;
    rest >> state >> ppid;
    if (ppid == parent) servers.push_back(std::stoi(name));
  }
  return servers;
}

TEST(RemoteClones, ACloneWhoseMemoryServerIsGoneEndsLostNotHung) {
  TestCluster cluster(2);
  REQUIRE_CLUSTER(cluster);
  // The clones wait 1.5 s before they read the parent's 8 MiB; the page server dies first.
  Background parent(RunArgs(cluster, {Guest("cluster_where"), "2", "1500", "8", "0", "1"}));
  ASSERT_TRUE(WaitForAll(parent, {"waiting on host1", "waiting on host2"}))
      << parent.out() << parent.err();
  const auto servers = PageServersOf(parent.pid());
  ASSERT_EQ(servers.size(), 1u) << "one page server for the sf_clone";
  ASSERT_EQ(kill(servers[0], SIGKILL), 0);
  auto r = parent.Wait(120s);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  auto outcomes = Outcomes(r.out);
  ASSERT_EQ(outcomes.size(), 2u) << r.Describe();
  for (const auto& [id, o] : outcomes) EXPECT_EQ(o.kind, kLost) << r.Describe();
  EXPECT_NE(r.err.find("running the clone"), std::string::npos) << r.Describe();
  ExpectOnlyDaemonsLeft(cluster, 2, 20s);
}

TEST(RemoteClones, TheClonesMemoryServerEndsWithThem) {
  TestCluster cluster(2);
  REQUIRE_CLUSTER(cluster);
  Background parent(RunArgs(cluster, {Guest("cluster_where"), "2", "500", "2", "0", "1"}));
  ASSERT_TRUE(WaitForAll(parent, {"waiting on host1", "waiting on host2"}))
      << parent.out() << parent.err();
  const auto servers = PageServersOf(parent.pid());
  ASSERT_EQ(servers.size(), 1u);
  auto r = parent.Wait(120s);
  ExpectCleanExit(r, 0);
  EXPECT_EQ(Outcomes(r.out).size(), 2u) << r.Describe();
  // Released with the ticket: no frozen copy of the VM outlives its clones.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline && kill(servers[0], 0) == 0) usleep(50000);
  EXPECT_NE(kill(servers[0], 0), 0) << "page server " << servers[0] << " still exists";
}

TEST(RemoteClones, PacketLossSlowsClonesButChangesNoResult) {
  TestCluster cluster(2);
  REQUIRE_CLUSTER(cluster);
  for (int k = 1; k <= 2; ++k) {
    const std::string why = cluster.DropIncoming(k, 2);
    ASSERT_EQ(why, "") << "nftables loss on host" << k;
  }
  auto r = Flurry(RunArgs(cluster, {Guest("cluster_where"), "4", "0", "4"}), WithDeadline(240));
  ExpectCleanExit(r, 0);
  const std::string sum = ParentSum(r.out);
  auto outcomes = Outcomes(r.out);
  ASSERT_EQ(outcomes.size(), 4u) << r.Describe();
  for (const auto& [id, o] : outcomes) {
    EXPECT_EQ(o.kind, kExited) << r.Describe();
    EXPECT_EQ(o.status, 0) << r.Describe();
    EXPECT_EQ(o.result.substr(o.result.find(' ') + 1), sum) << r.Describe();
  }
  EXPECT_GT(cluster.Dropped(1) + cluster.Dropped(2), 0u) << "no packet was dropped: no test";
}

TEST(RemoteClones, ASlowQueueingLinkSlowsClonesButChangesNoResult) {
  TestCluster cluster(1);
  REQUIRE_CLUSTER(cluster);
  const std::string why = cluster.ShapeToHost(1, "40mbit", "200ms");
  ASSERT_EQ(why, "") << "tc tbf on host1's link";
  auto r = Flurry(RunArgs(cluster, {Guest("cluster_where"), "2", "0", "4"}), WithDeadline(240));
  ExpectCleanExit(r, 0);
  const std::string sum = ParentSum(r.out);
  auto outcomes = Outcomes(r.out);
  ASSERT_EQ(outcomes.size(), 2u) << r.Describe();
  for (const auto& [id, o] : outcomes) {
    EXPECT_EQ(o.kind, kExited) << r.Describe();
    EXPECT_EQ(o.status, 0) << r.Describe();
    EXPECT_EQ(o.result, "host1 " + sum) << r.Describe();
  }
  EXPECT_GT(cluster.ShapedPackets(1), 0u) << "the link never held a packet back: no test";
}

TEST(RemoteClones, ClusterStatusShowsEachHostsRunningClones) {
  TestCluster cluster(2);
  REQUIRE_CLUSTER(cluster);
  Background parent(RunArgs(cluster, {Guest("cluster_where"), "2", "600000", "1"}));
  ASSERT_TRUE(WaitForAll(parent, {"on host1 sum=", "on host2 sum="}))
      << parent.out() << parent.err();
  auto status = Flurry({"cluster", "status", cluster.file()}, WithDeadline(60));
  ExpectCleanExit(status, 0);
  // NAME ADDRESS SLOTS RUNNING MEMORY_MIB FREE_MIB STATE
  static const std::regex row(R"(^(host\d)\s+\S+\s+8\s+(\d+)\s+\d+\s+\d+\s+up$)");
  std::map<std::string, int> running;
  for (const auto& line : Lines(status.out)) {
    std::smatch m;
    if (std::regex_match(line, m, row)) running[m[1]] = std::stoi(m[2]);
  }
  EXPECT_EQ(running, (std::map<std::string, int>{{"host1", 1}, {"host2", 1}})) << status.out;
  // A host that is down is named, and the status fails.
  ASSERT_EQ(cluster.Stop(2).exit_code, 0);
  auto down = Flurry({"cluster", "status", cluster.file()}, WithDeadline(60));
  EXPECT_EQ(down.exit_code, 1) << down.Describe();
  EXPECT_TRUE(std::regex_search(down.out, std::regex("host2 .* unreachable"))) << down.out;
  parent.KillProcess();
  parent.Wait(30s);
}

// cluster_files's "clone N: sum=S status=X kind=K" lines, by ID.
std::map<int, std::string> FileClones(const std::string& out) {
  std::map<int, std::string> clones;
  static const std::regex line(R"(^clone (\d+): (sum=.*)$)");
  for (const auto& text : Lines(out)) {
    std::smatch m;
    if (std::regex_match(text, m, line)) clones[std::stoi(m[1])] = m[2];
  }
  return clones;
}

// A --dir for cluster_files: input.bin (`size` bytes of a pattern) and sub/{note,later}.txt.
void MakeClusterFilesDir(const fs::path& dir, size_t size) {
  std::string input(size, '\0');
  for (size_t i = 0; i < size; ++i) input[i] = static_cast<char>((i * 7 + i / 4096) & 0xff);
  WriteFile(dir / "input.bin", input);
  fs::create_directories(dir / "sub");
  WriteFile(dir / "sub" / "note.txt", "note\n");
  WriteFile(dir / "sub" / "later.txt", "later\n");
}

// Remote clones see the parent's --dir: the files open at sf_clone (at their offsets), other
// files, stat() and listings; their bytes cross each clone host's network (the clones never
// open the parent's directory by its path: on a real cluster that path is on another
// machine). Their writes stay private, and the parent's directory stays as it was.
TEST(RemoteClones, RemoteClonesReadTheParentsDirAndWriteTheirOwnCopy) {
  TestCluster cluster(2);
  REQUIRE_CLUSTER(cluster);
  TempDir dir;
  constexpr size_t kInput = 8u << 20;
  MakeClusterFilesDir(dir.path(), kInput);
  const uint64_t before1 = cluster.Received(1), before2 = cluster.Received(2);
  auto r =
      Flurry(RunArgs(cluster, {"--dir", dir.path().string() + ":rw", Guest("cluster_files"), "2"}),
             WithDeadline(240));
  ExpectCleanExit(r, 0);
  static const std::regex parent_line(R"(parent sum=([0-9a-f]+)\n)");
  std::smatch m;
  ASSERT_TRUE(std::regex_search(r.out, m, parent_line)) << r.Describe();
  const std::string sum = m[1];
  EXPECT_EQ(FileClones(r.out), (std::map<int, std::string>{{1, "sum=" + sum + " status=0 kind=1"},
                                                           {2, "sum=" + sum + " status=0 kind=1"}}))
      << r.Describe();
  EXPECT_NE(r.out.find("parent sees /clone_1.txt: no\n"), std::string::npos) << r.Describe();
  // One clone per host, each of which received the file's 8 MiB over its interface.
  EXPECT_GE(cluster.Received(1) - before1, kInput) << "host1";
  EXPECT_GE(cluster.Received(2) - before2, kInput) << "host2";
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(dir.path())) names.insert(e.path().filename());
  EXPECT_EQ(names, (std::set<std::string>{"input.bin", "sub"})) << "a clone's write reached --dir";
  EXPECT_EQ(ReadFile(dir.path() / "sub" / "note.txt"), "note\n");
  ExpectOnlyDaemonsLeft(cluster, 2, 20s);
}

// Clones of one sf_clone on one host share what they fetch: each file crosses the host's
// network once, not once per clone.
TEST(RemoteClones, ClonesOnOneHostFetchEachFileOnce) {
  TestCluster cluster(1);
  REQUIRE_CLUSTER(cluster);
  TempDir dir;
  constexpr size_t kInput = 16u << 20;
  MakeClusterFilesDir(dir.path(), kInput);
  const uint64_t before = cluster.Received(1);
  auto r =
      Flurry(RunArgs(cluster, {"--dir", dir.path().string() + ":rw", Guest("cluster_files"), "4"}),
             WithDeadline(240));
  ExpectCleanExit(r, 0);
  auto clones = FileClones(r.out);
  ASSERT_EQ(clones.size(), 4u) << r.Describe();
  for (const auto& [id, line] : clones) EXPECT_TRUE(line.ends_with(" status=0 kind=1")) << line;
  // 4 clones read the 16 MiB file: once over the wire (plus their memory), not 4 times.
  const uint64_t received = cluster.Received(1) - before;
  EXPECT_GE(received, kInput);
  EXPECT_LT(received, 2 * kInput) << "the file crossed the network more than once";
  // The host's cache went with the clones.
  ExpectOnlyDaemonsLeft(cluster, 1, 20s);
  std::vector<std::string> left;
  for (const auto& e : fs::directory_iterator(cluster.dir() + "/state/host1/clones")) {
    left.push_back(e.path().filename());
  }
  EXPECT_TRUE(left.empty()) << left.front();
}

// A remote clone's own (nested) clones see the files too, also those it never opened itself:
// it fetches what is left before it forks.
TEST(RemoteClones, NestedClonesOfARemoteCloneSeeTheParentsFiles) {
  TestCluster cluster(1);
  REQUIRE_CLUSTER(cluster);
  TempDir dir;
  MakeClusterFilesDir(dir.path(), 100000);
  auto r = Flurry(RunArgs(cluster, {"--dir", dir.path().string() + ":rw", Guest("cluster_files"),
                                    "1", "nested"}),
                  WithDeadline(240));
  ExpectCleanExit(r, 0);
  auto clones = FileClones(r.out);
  ASSERT_EQ(clones.size(), 1u) << r.Describe();
  EXPECT_TRUE(clones[1].ends_with(" status=0 kind=1")) << r.Describe();
  ExpectOnlyDaemonsLeft(cluster, 1, 20s);
}

// sf_checkpoint_parent + sf_create_clones in a cluster VM: the clones run on the hosts, from
// the checkpoint's memory and file offsets.
TEST(RemoteClones, ClonesOfACheckpointRunOnTheHosts) {
  TestCluster cluster(1);
  REQUIRE_CLUSTER(cluster);
  TempDir dir;
  WriteFile(dir.path() / "data.txt", "0123456789ABCDEFGHIJ");
  const uint64_t before = cluster.Received(1);
  auto r = Flurry(RunArgs(cluster, {"--clone-stats", "--dir", dir.path().string(),
                                    Guest("fork_files"), "checkpoint"}),
                  WithDeadline(240));
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out,
            "parent read: 01234\n"
            "parent read after checkpoint: 56789\n"
            "clone 1: read 56789, status 0\n"
            "clone 2: read 56789, status 0\n")
      << r.Describe();
  // Each clone restored from the checkpoint's page server on host1 (its memory counters).
  static const std::regex stats(R"(flurry: clone (\d+): memory on demand: faults=\d+ )");
  std::set<int> reported;
  for (const auto& line : Lines(r.err)) {
    std::smatch m;
    if (std::regex_search(line, m, stats)) reported.insert(std::stoi(m[1]));
  }
  EXPECT_EQ(reported, (std::set<int>{1, 2})) << r.Describe();
  EXPECT_GT(cluster.Received(1) - before, 100000u);
  ExpectOnlyDaemonsLeft(cluster, 1, 20s);
}

TEST(RemoteClones, AMemberOfAnotherClusterIsRefused) {
  TestCluster cluster(1);
  REQUIRE_CLUSTER(cluster);
  // The same host name and address, credentials from another CA.
  TempDir other;
  const std::string address = cluster.dir().empty() ? "" : [&] {
    auto show = Flurry({"cluster", "show", cluster.file()});
    std::smatch m;
    std::regex_search(show.out, m, std::regex(R"((\d+\.\d+\.\d+\.\d+:\d+))"));
    return std::string(m[1]);
  }();
  ASSERT_FALSE(address.empty());
  auto init = Flurry({"cluster", "init", other.path().string(), "--name", "impostor", "--host",
                      "host1=" + address});
  ASSERT_EQ(init.exit_code, 0) << init.Describe();
  const std::string impostor = Lines(init.out).back();
  auto r = Flurry({"run", "--cluster", impostor, Guest("cluster_where"), "1", "0", "1"},
                  WithDeadline(120));
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  auto outcomes = Outcomes(r.out);
  ASSERT_EQ(outcomes.size(), 1u) << r.Describe();
  EXPECT_EQ(outcomes.begin()->second.kind, kLost) << r.Describe();
  EXPECT_NE(r.err.find("clone 1 on host1 lost"), std::string::npos) << r.Describe();
  // The daemon ran nothing for it.
  EXPECT_EQ(cluster.Commands(1), std::vector<std::string>{"flurryd\n"});
}

}  // namespace
