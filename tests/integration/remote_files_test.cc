// Clones on other hosts, continued from remote_clone_test.cc: the parent's --dir (read on
// demand, cached per host, private writes) and clones of a checkpoint, on the test cluster.
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <sstream>
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
  // The host's cache went with the clones (the daemon removes it once the call's last clone
  // has been reported, a moment after the clone processes are gone), and so did their
  // directories: what is left are the directories of the clone VMMs it keeps waiting.
  ExpectOnlyDaemonsLeft(cluster, 1, 20s);
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  std::vector<std::string> left;
  do {
    left.clear();
    const std::set<std::string> waiting = cluster.WaitingVmmDirs(1);
    for (const auto& e : fs::directory_iterator(cluster.dir() + "/state/host1/clones")) {
      if (!waiting.contains(e.path().string())) left.push_back(e.path().filename());
    }
  } while (!left.empty() && std::chrono::steady_clock::now() < deadline && usleep(100000) == 0);
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

// sf_release_checkpoint in a cluster VM: the checkpoint's clones run on the host to their end,
// and the released checkpoints' snapshot processes and page servers end (none is held by the
// page server of a later checkpoint); the one checkpoint kept keeps one of each.
TEST(RemoteClones, AReleasedCheckpointsCopyAndPageServerEnd) {
  TestCluster cluster(1);
  REQUIRE_CLUSTER(cluster);
  TempDir dir;
  Background vm(RunArgs(
      cluster, {"--clone-stats", "--dir", dir.path().string(), Guest("fork_checkpoint_release")}));
  ASSERT_TRUE(vm.WaitForLine("holding 1 checkpoint", 180s)) << vm.out() << vm.err();
  int snapshots = -1, page_servers = -1;
  for (int i = 0; i < 2000; ++i) {
    snapshots = LiveDescendantsNamed(vm.pid(), "flurry-snapshot");
    page_servers = LiveDescendantsNamed(vm.pid(), "flurry-pages");
    if (snapshots == 1 && page_servers == 1) break;
    usleep(10'000);
  }
  EXPECT_EQ(snapshots, 1);
  EXPECT_EQ(page_servers, 1);
  // The guest's stubs (seccomp backend: the VM's, and each fork's copy of it) share a session
  // of their own (the first stub's setsid): none of them may outlive the run, not even the
  // copy made for a page server killed before it could drive it.
  pid_t stubs_session = 0;
  for (const auto& [pid, st] : Descendants(vm.pid())) {
    if (st.session == pid) stubs_session = pid;
  }
  const char* backend = std::getenv("FLURRY_BACKEND");
  if (backend != nullptr && std::string(backend) == "seccomp") {
    EXPECT_NE(stubs_session, 0) << "no stub found";
  }
  WriteFile(dir.path() / "done", "");
  const RunResult r = vm.Wait(120s);
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, kCheckpointReleaseOutput) << r.Describe();
  // The two clones ran on host1 (their memory came from the checkpoint's page server).
  static const std::regex stats(R"(flurry: clone (\d+): memory on demand: faults=\d+ )");
  int reported = 0;
  for (const auto& line : Lines(r.err)) reported += std::regex_search(line, stats) ? 1 : 0;
  EXPECT_EQ(reported, 2) << r.Describe();
  ExpectOnlyDaemonsLeft(cluster, 1, 20s);
  if (stubs_session != 0) {
    int stubs_left = -1;
    for (int i = 0; i < 300 && stubs_left != 0; ++i) {
      if (i > 0) usleep(100'000);
      stubs_left = LiveProcessesInSession(stubs_session);
    }
    EXPECT_EQ(stubs_left, 0) << "stubs outlived the VM";
  }
}

}  // namespace
