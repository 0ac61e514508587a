// End-to-end tests of VM fork in a VM of several guest processes (tests/guest/fork_processes.c,
// fork_vm_processes.c, ctl_clone_loop.c's processes mode is in ctl_test.cc): sf_clone, checkpoints
// and sf_kill take every process; clones of a one-process VM fork processes of their own. Output
// is split as in fork_test.cc (fork_support.h).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "fork_support.h"
#include "harness.h"
#include "process_watch.h"

namespace {

using namespace flurry_test;

TEST(ForkProcesses, OneProcessVmsCloneAndEachCloneHasItsOwnProcesses) {
  auto r = FlurryRun({Guest("fork_processes")});
  ExpectFinished(r, 0);
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  auto vm = [](int id) {
    const std::string prefix = "clone " + std::to_string(id) + ": ";
    return prefix + "child exited " + std::to_string(20 + id) + "\n" + prefix +
           "no other children: yes\n";
  };
  EXPECT_EQ(Join(s.parent), "child: killed\n" + vm(0) +
                                "clone 1: kind 1 status 11\n"
                                "clone 2: kind 1 status 12\n")
      << r.Describe();
  EXPECT_EQ(Join(s.clones[1]), vm(1)) << r.Describe();
  EXPECT_EQ(Join(s.clones[2]), vm(2)) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
}

// sf_clone in a VM of several processes clones every process (tests/guest/fork_vm_processes.c):
// in each clone, init's copy talks to its child's copy through copies of their pipes (with
// the bytes in flight at the clone instant), and reaps it with the clone's exit status.
void ExpectEveryProcessInEachClone(const std::string& mode) {
  ProcessWatch watch;
  auto r = FlurryRun({Guest("fork_vm_processes"), mode});
  ExpectFinished(r, 0);
  // Nothing is left: the copiers end with the snapshot process, the copies with their clone.
  const std::vector<std::string> leftovers = watch.Leftovers();
  EXPECT_TRUE(leftovers.empty()) << ::testing::PrintToString(leftovers) << r.Describe();
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  // The child's pid: the same in every VM (a clone is a copy of the whole machine).
  const std::string first = s.parent.empty() ? "" : s.parent.front();
  const std::string child =
      first.substr(first.find("from ") + 5, first.find(" in ") - first.find("from ") - 5);
  ASSERT_FALSE(child.empty()) << r.Describe();
  auto vm = [&](int id) {
    const std::string prefix = "vm " + std::to_string(id) + ": ";
    return prefix + "ping from " + child + " in clone " + std::to_string(id) + "\n" + prefix +
           "later from " + child + ": in flight\n" + prefix + "child " + child + " exited " +
           std::to_string(30 + id) + "\n" + prefix + "answers at end of file: yes\n";
  };
  EXPECT_EQ(Join(s.parent), vm(0) + "clone 1: status 11\nclone 2: status 12\n") << r.Describe();
  EXPECT_EQ(Join(s.clones[1]), vm(1)) << r.Describe();
  EXPECT_EQ(Join(s.clones[2]), vm(2)) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
}

TEST(ForkProcesses, ACloneOfAVmOfSeveralProcessesHasEveryProcess) {
  ExpectEveryProcessInEachClone("init_clones");
}

// A checkpoint of a VM of several processes holds every process as it was: the clones made
// from it after the parent's child has exited (and read what was in flight) still have it.
TEST(ForkProcesses, ClonesOfACheckpointHaveEveryProcessAsItWas) {
  ExpectEveryProcessInEachClone("checkpoint_clones");
}

// sf_kill of a clone whose cloning process is not init (a child took the checkpoint): the
// clone's other processes end with it, though their copiers live on with the checkpoint.
TEST(ForkProcesses, AKilledCloneEndsWholeWhenItsClonerIsNotInit) {
  ProcessWatch watch;
  auto r = FlurryRun({Guest("fork_vm_processes"), "checkpoint_kill"});
  ExpectFinished(r, 0);
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  long killed_at = -1;
  for (const auto& line : s.parent) {
    if (StartsWith(line, "killed at ")) killed_at = std::stol(line.substr(10));
  }
  ASSERT_GT(killed_at, 0) << r.Describe();
  EXPECT_NE(r.out.find("clone 1: kind 3\n"), std::string::npos)  // SF_OUTCOME_KILLED
      << r.Describe();
  EXPECT_NE(r.out.find("init: child exited 0\n"), std::string::npos) << r.Describe();
  // The clone's init ticked until it was ended with the clone: well before the checkpoint's
  // owner (the parent's child) exits 5 s after the kill, and the 10 s it would tick for.
  long last_tick = -1;
  for (const auto& line : s.clones[1]) {
    if (StartsWith(line, "tick ")) last_tick = std::stol(line.substr(5));
  }
  if (last_tick < 0) {
    GTEST_SKIP() << "the clone did not start within 3 s: too slow a host to tell" << r.Describe();
  }
  EXPECT_LT(last_tick, killed_at + 3500) << "the clone's init outlived the clone" << r.Describe();
  EXPECT_TRUE(watch.Leftovers().empty()) << r.Describe();
}

// A process whose threads compute without making a syscall is stopped where it is for the
// clone: each VM's copy of it finishes the same computation.
TEST(ForkProcesses, ComputingProcessesAreStoppedForTheClone) {
  auto r = FlurryRun({Guest("fork_vm_processes"), "busy_clones"});
  ExpectFinished(r, 0);
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  ASSERT_EQ(s.parent.size(), 3u) << r.Describe();
  const std::string sum = s.parent[0].substr(0, s.parent[0].find(", child"));
  EXPECT_TRUE(sum.starts_with("vm 0: sum ")) << r.Describe();
  auto vm = [&](int id) {
    return "vm " + std::to_string(id) + sum.substr(4) + ", child exited " +
           std::to_string(40 + id) + "\n";
  };
  EXPECT_EQ(Join(s.parent), vm(0) + "clone 1: status 11\nclone 2: status 12\n") << r.Describe();
  EXPECT_EQ(Join(s.clones[1]), vm(1)) << r.Describe();
  EXPECT_EQ(Join(s.clones[2]), vm(2)) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
}

// The process that calls sf_clone need not be init: its copy is the clone's, whose end
// (sf_exit_with) ends the clone's other processes too; init's wait in the parent VM is not
// disturbed.
TEST(ForkProcesses, AChildProcessClonesTheWholeVm) {
  ProcessWatch watch;
  auto r = FlurryRun({Guest("fork_vm_processes"), "child_clones"});
  ExpectFinished(r, 0);
  const std::vector<std::string> leftovers = watch.Leftovers();
  EXPECT_TRUE(leftovers.empty()) << ::testing::PrintToString(leftovers) << r.Describe();
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  EXPECT_EQ(Join(s.parent), "joined 1: status 1\njoined 2: status 2\ninit: child exited 7\n")
      << r.Describe();
  for (int id : {1, 2}) {
    ASSERT_EQ(s.clones[id].size(), 1u) << r.Describe();
    EXPECT_TRUE(s.clones[id][0].starts_with("clone " + std::to_string(id) + ": child "))
        << r.Describe();
    EXPECT_EQ(s.clones[id][0].find("parent -1"), std::string::npos) << r.Describe();
  }
  EXPECT_EQ(r.err, "") << r.Describe();
}

}  // namespace
