// The test cluster of the cross-host tests (remote_clone_test.cc, remote_files_test.cc):
// scripts/cluster.sh up/down around a test, each host's received bytes, processes, packet loss
// and link shaping, and the parsing of the guests' outcome lines.
#pragma once

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstddef>
#include <cstring>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "ctl_support.h"
#include "harness.h"
#include "netns_support.h"

namespace flurry_test {

using namespace std::chrono_literals;

// A cluster of `hosts` test hosts, up for the life of the object.
class TestCluster {
 public:
  // `env`: NAME=value settings for scripts/cluster.sh (e.g. FLURRY_CLUSTER_WARM=0).
  explicit TestCluster(int hosts, std::vector<std::string> env = {})
      : hosts_(hosts), env_(std::move(env)) {
    // A subnet (and name) no other test process's cluster has at the same time: the kvm and
    // seccomp copies of a test run at once. Holding the abstract socket
    // "flurry-test-subnet-X" claims 10.89.X; the kernel lets it go when this process ends.
    int x = static_cast<int>(getpid() % 250);
    for (int tries = 0; tries < 250; ++tries, x = (x + 1) % 250) {
      const int claim = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      sockaddr_un address{};
      address.sun_family = AF_UNIX;
      const std::string name = "flurry-test-subnet-" + std::to_string(x);
      std::memcpy(address.sun_path + 1, name.data(), name.size());  // sun_path[0] = 0: abstract
      const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + name.size());
      if (claim >= 0 && bind(claim, reinterpret_cast<sockaddr*>(&address), length) == 0) {
        subnet_claim_ = claim;
        break;
      }
      if (claim >= 0) close(claim);
    }
    name_ = "t" + std::to_string(x);
    subnet_ = "10.89." + std::to_string(x);
    auto r = Script({"up", std::to_string(hosts)});
    up_ = r.exited && r.exit_code == 0;
    if (!up_) {
      error_ = r.Describe();
      return;
    }
    auto lines = Lines(r.out);
    file_ = lines.empty() ? "" : lines.back();
  }
  ~TestCluster() {
    Script({"down"});
    if (subnet_claim_ >= 0) close(subnet_claim_);
  }
  TestCluster(const TestCluster&) = delete;
  TestCluster& operator=(const TestCluster&) = delete;

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
  // Bytes this machine's own namespace (where the parent VM runs) sent into the cluster's
  // bridge: one copy of each packet, however many hosts a multicast one reaches.
  uint64_t SentHere() const {
    const std::string text =
        ReadFile("/sys/class/net/fb-" + name_.substr(0, 12) + "/statistics/tx_bytes");
    return text.empty() ? 0 : std::stoull(text);
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
  // Commands of host k's processes that run clones: all but its daemon and the clone VMMs it
  // keeps waiting for clones (`flurry clone-vmm` not yet given a clone is still "flurry"; given
  // one, "flurry-clone").
  std::vector<std::string> CloneCommands(int k) const {
    std::vector<std::string> commands;
    for (pid_t pid : Pids(k)) {
      const std::string proc = "/proc/" + std::to_string(pid);
      const std::string comm = ReadFile(proc + "/comm");
      if (comm.empty()) continue;                 // gone since it was listed
      if (comm.starts_with("flurryd")) continue;  // the daemon (or its child before its exec)
      if (comm == "flurry\n") {
        // Waiting for a clone, or one being ended (its memory gone, so is its command line;
        // flurryd ends waiting VMMs made for another memory size, and at its stop).
        const std::string cmdline = ReadFile(proc + "/cmdline");
        if (cmdline.empty() || IsCloneVmm(cmdline)) continue;
      }
      commands.push_back(comm);
    }
    return commands;
  }
  // Clone VMMs host k keeps waiting for clones.
  std::set<pid_t> WaitingVmms(int k) const {
    std::set<pid_t> waiting;
    for (pid_t pid : Pids(k)) {
      const std::string proc = "/proc/" + std::to_string(pid);
      if (ReadFile(proc + "/comm") == "flurry\n" && IsCloneVmm(ReadFile(proc + "/cmdline"))) {
        waiting.insert(pid);
      }
    }
    return waiting;
  }
  static bool IsCloneVmm(const std::string& cmdline) {
    return cmdline.find(std::string("clone-vmm\0", 10)) != std::string::npos;
  }
  // Waits (up to `limit`) until host k keeps `n` clone VMMs waiting, each with `argument` on
  // its command line when not empty; returns them.
  std::set<pid_t> WaitForWaitingVmms(int k, size_t n, std::chrono::seconds limit,
                                     const std::string& argument = "") const {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    auto ready = [&](const std::set<pid_t>& waiting) {
      if (waiting.size() != n) return false;
      for (pid_t pid : waiting) {
        const std::string cmdline = ReadFile("/proc/" + std::to_string(pid) + "/cmdline");
        if (cmdline.find(argument) == std::string::npos) return false;
      }
      return true;
    };
    std::set<pid_t> waiting = WaitingVmms(k);
    while (!ready(waiting) && std::chrono::steady_clock::now() < deadline) {
      usleep(50000);
      waiting = WaitingVmms(k);
    }
    return waiting;
  }
  // The working directories flurryd made for the clone VMMs host k keeps waiting (their cwd).
  std::set<std::string> WaitingVmmDirs(int k) const {
    std::set<std::string> dirs;
    for (pid_t pid : WaitingVmms(k)) {
      std::error_code error;
      const auto cwd = fs::read_symlink("/proc/" + std::to_string(pid) + "/cwd", error);
      if (!error) dirs.insert(cwd.string());
    }
    return dirs;
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
  // so no fixed added delay: a slow, queueing link stands in for a distant one. The bucket holds
  // more than one 9000-byte frame of the cluster's links: tbf drops a packet larger than it.)
  std::string ShapeToHost(int k, const std::string& rate, const std::string& latency) const {
    const std::string tc = "/usr/sbin/tc";
    if (access(tc.c_str(), X_OK) != 0) return "no " + tc;
    auto r = Run({tc, "qdisc", "replace", "dev", HostVeth(k), "root", "tbf", "rate", rate, "burst",
                  "96kbit", "latency", latency},
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
    std::vector<std::string> command = {"/usr/bin/env", "FLURRY_CLUSTER_NAME=" + name_,
                                        "FLURRY_CLUSTER_SUBNET=" + subnet_,
                                        std::string("FLURRY_BUILD=") + FLURRY_BUILD_DIR};
    command.insert(command.end(), env_.begin(), env_.end());
    command.push_back(FLURRY_CLUSTER_SCRIPT);
    command.insert(command.end(), args.begin(), args.end());
    return Run(command, WithDeadline(120));
  }
  // The root namespace's end of host k's veth (scripts/cluster.sh names it).
  std::string HostVeth(int k) const { return "fv-" + name_.substr(0, 6) + "-" + std::to_string(k); }
  int hosts_;
  std::vector<std::string> env_;
  int subnet_claim_ = -1;  // the socket that claims the subnet
  std::string name_, subnet_, file_, error_;
  bool up_ = false;
};

// How many times `text` occurs in `out`.
inline int Occurrences(const std::string& out, const std::string& text) {
  int n = 0;
  for (size_t at = out.find(text); at != std::string::npos; at = out.find(text, at + 1)) ++n;
  return n;
}

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
inline std::map<int, Outcome> Outcomes(const std::string& out) {
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

inline std::string ParentSum(const std::string& out) {
  static const std::regex line(R"(^parent on \S+ sum=(\d+) join_ms=\d+$)");
  for (const auto& text : Lines(out)) {
    std::smatch m;
    if (std::regex_match(text, m, line)) return m[1];
  }
  return "";
}

inline constexpr int kExited = 1, kKilled = 3, kLost = 4;  // SF_OUTCOME_*

inline std::vector<std::string> RunArgs(const TestCluster& cluster,
                                        std::vector<std::string> guest) {
  std::vector<std::string> args = {"run", "--cluster", cluster.file()};
  args.insert(args.end(), guest.begin(), guest.end());
  return args;
}

// Waits until the parent's stdout holds every one of `texts`.
inline bool WaitForAll(Background& parent, std::vector<std::string> texts) {
  return parent.WaitForOut(
      [texts](const std::string& out) {
        for (const auto& t : texts) {
          if (out.find(t) == std::string::npos) return false;
        }
        return true;
      },
      120s);
}

// Waits (up to `limit`) until hosts 1..n run no clone, only their daemons (and the clone VMMs
// they keep waiting), then checks it.
inline void ExpectOnlyDaemonsLeft(const TestCluster& cluster, int n, std::chrono::seconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  auto busy = [&] {
    for (int k = 1; k <= n; ++k) {
      if (!cluster.CloneCommands(k).empty()) return true;
    }
    return false;
  };
  while (std::chrono::steady_clock::now() < deadline && busy()) usleep(100000);
  for (int k = 1; k <= n; ++k) {
    EXPECT_EQ(cluster.CloneCommands(k), std::vector<std::string>{})
        << "host" << k << ": " << ::testing::PrintToString(cluster.Commands(k));
    EXPECT_GT(cluster.DaemonPid(k), 0) << "host" << k;
    // No more VMMs waiting than the daemon keeps (one per slot, 8).
    EXPECT_LE(cluster.WaitingVmms(k).size(), 8u) << "host" << k;
  }
}

}  // namespace flurry_test
