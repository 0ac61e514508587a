// End-to-end tests of VM fork (memory, results, nesting, sf_kill, checkpoints, crashes, misuse;
// output, identity, exit, files and the example are in fork_output_test.cc, VMs of several
// processes in fork_processes_test.cc): guest programs
// (tests/guest/fork_*.c) use the SDK (flurry/sf.h) to clone their VM, and these tests check exactly
// what the parent and the clones printed and how flurry exited. Clone output is "[clone N]
// "-prefixed and its position among the parent's lines is not fixed, so most tests split stdout
// into the parent's lines (checked exactly, in order) and each clone's lines (checked exactly, in
// order per clone).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "ctl_support.h"
#include "fork_support.h"
#include "harness.h"
#include "process_watch.h"

namespace {

using namespace flurry_test;

// ---------------------------------------------------------------------------------------------
// 1. Memory integrity: every clone starts from the parent's memory at sf_clone and sees only
//    its own writes afterwards; the parent sees none of the clones' writes.

TEST(ForkMemory, EightClonesOf64MiBSeeOnlyTheirOwnWrites) {
  // 8 x 64 MiB written by clones: under emulation (KVM inside QEMU/TCG) this alone takes
  // 20-30 s, so the hang guard is wider than the others (the test's ctest TIMEOUT is 120 s).
  auto r = FlurryRun({"--mem", "1G", Guest("fork_memory")}, 110);
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  // Exit status 1: saw the parent's post-clone writes; 2: saw its post-clone flag; 3: a
  // sibling's writes; 4: sf_id() != sf_clone()'s value.
  EXPECT_EQ(r.out,
            "granted 8\n"
            "clone 1: exited 0\n"
            "clone 2: exited 0\n"
            "clone 3: exited 0\n"
            "clone 4: exited 0\n"
            "clone 5: exited 0\n"
            "clone 6: exited 0\n"
            "clone 7: exited 0\n"
            "clone 8: exited 0\n"
            "parent memory: ok\n"
            "done\n")
      << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// 2. Result blobs: slices computed by the clones equal the serial computation.

struct SliceStats {
  uint64_t sum = 0;
  uint32_t xor_all = 0, min = UINT32_MAX, max = 0;
};

// What fork_slices prints for `clones` granted clones over `elements` values (its generator
// and slicing, recomputed here so the test checks actual values, not just "match").
std::string ExpectedSlicesOutput(int granted, uint64_t elements) {
  std::vector<uint32_t> data(elements);
  uint64_t x = 42;
  for (auto& v : data) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    v = static_cast<uint32_t>(x >> 32);
  }
  SliceStats s;
  for (uint32_t v : data) {
    s.sum += v;
    s.xor_all ^= v;
    s.min = std::min(s.min, v);
    s.max = std::max(s.max, v);
  }
  std::ostringstream out;
  out << "granted " << granted << "\n";
  const uint64_t per = elements / granted;
  for (int i = 0; i < granted; ++i) {
    const uint64_t first = i * per;
    const uint64_t count = i == granted - 1 ? elements - first : per;
    out << "clone " << i + 1 << ": slice " << i << " first " << first << " count " << count
        << " length " << 48 + count * 4 << "\n";
  }
  std::string stats = "sum " + std::to_string(s.sum) + " xor " + std::to_string(s.xor_all) +
                      " min " + std::to_string(s.min) + " max " + std::to_string(s.max) + "\n";
  out << stats << "serial: " << stats << "transformed: match\nresult: match\n";
  return out.str();
}

TEST(ForkSlices, ResultBlobsEqualSerialComputation) {
  auto r = FlurryRun({Guest("fork_slices"), "4", "524288"});
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  EXPECT_EQ(r.out, ExpectedSlicesOutput(4, 524288)) << r.Describe();
}

TEST(ForkSlices, UnevenSlicesUnderMaxClonesCap) {
  // 7 clones asked, 3 granted; 200003 elements do not divide evenly.
  auto r = FlurryRun({"--max-clones", "3", Guest("fork_slices"), "7", "200003"});
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  EXPECT_EQ(r.out, ExpectedSlicesOutput(3, 200003)) << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// 3. Nested clones: clone 1 clones 2 grandchildren, each of which clones a great-grandchild;
//    results flow up the tree; every ID in the family is distinct.

TEST(ForkNested, GrandchildrenReportThroughTheirParent) {
  auto r = FlurryRun({Guest("fork_nested")});
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  ASSERT_EQ(s.parent.size(), 6u) << r.Describe();
  EXPECT_EQ(s.parent[0], "clone 1: exited 0, reports 1, subtree 5 ids") << r.Describe();
  EXPECT_EQ(s.parent[1], "clone 2: exited 0, reports 2, subtree 1 ids") << r.Describe();
  EXPECT_EQ(s.parent[3], "distinct: yes") << r.Describe();
  EXPECT_EQ(s.parent[4], "sum: match") << r.Describe();
  EXPECT_EQ(s.parent[5], "errors: 0") << r.Describe();

  // "ids: 0 1 2 a b c d": the original VM, its two clones, four descendants of clone 1.
  ASSERT_TRUE(StartsWith(s.parent[2], "ids:")) << r.Describe();
  std::istringstream words(s.parent[2].substr(4));
  std::vector<int> ids;
  for (int id; words >> id;) ids.push_back(id);
  ASSERT_EQ(ids.size(), 7u) << r.Describe();
  EXPECT_EQ(std::set<int>(ids.begin(), ids.end()).size(), 7u) << "IDs repeat" << r.Describe();
  EXPECT_EQ(ids[0], 0) << r.Describe();
  EXPECT_EQ(ids[1], 1) << r.Describe();
  EXPECT_EQ(ids[2], 2) << r.Describe();
  for (size_t i = 3; i < ids.size(); ++i) EXPECT_GT(ids[i], 2) << r.Describe();

  // Each clone printed one line, under its own prefix (not its parent's).
  std::set<int> clone_ids(ids.begin() + 1, ids.end());
  std::set<int> printed;
  for (const auto& [id, lines] : s.clones) {
    printed.insert(id);
    EXPECT_EQ(Join(lines), "hello from clone " + std::to_string(id) + "\n") << r.Describe();
  }
  EXPECT_EQ(printed, clone_ids) << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// 4. sf_kill.

TEST(ForkKill, SpinningAndSleepingClonesAreKilled) {
  auto r = FlurryRun({Guest("fork_kill"), "join"}, kShortDeadline);
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  EXPECT_EQ(r.out,
            "granted 4\n"
            "kill: 0\n"
            "join: 4\n"
            "clone 1: killed\n"
            "clone 2: killed\n"
            "clone 3: killed\n"
            "clone 4: killed\n"
            "kill + join under 3 s: yes\n"
            "kill again: EINVAL\n"
            "join again: EINVAL\n")
      << r.Describe();
  EXPECT_LT(r.seconds, 5) << r.Describe();
}

TEST(ForkKill, CloneThatHadExitedKeepsItsOutcome) {
  auto r = FlurryRun({Guest("fork_kill"), "exited"}, kShortDeadline);
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  EXPECT_EQ(r.out,
            "kill: 0\n"
            "join: 2\n"
            "clone 1: exited 5\n"
            "clone 2: killed\n")
      << r.Describe();
}

TEST(ForkKill, ParentExitingWithoutJoinEndsItsClones) {
  // The harness waits for EOF on stdout/stderr, which clones share: a surviving clone would
  // hold them open and the run would time out.
  auto r = FlurryRun({Guest("fork_kill"), "nojoin"}, kShortDeadline);
  ExpectFinished(r, 3);
  EXPECT_EQ(r.err, "") << r.Describe();
  EXPECT_EQ(r.out, "exiting without join (clone returned 0)\n") << r.Describe();
  EXPECT_LT(r.seconds, 5) << r.Describe();
}

TEST(ForkKill, ParentCrashEndsItsClones) {
  auto r = FlurryRun({Guest("fork_kill"), "crash"}, kShortDeadline);
  ExpectFinished(r, 128 + 11);
  EXPECT_EQ(r.out, "parent: crash\n") << r.Describe();
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.Describe();
  EXPECT_TRUE(StartsWith(lines[0], "flurry: guest fault: ")) << r.Describe();
  EXPECT_LT(r.seconds, 5) << r.Describe();
}

TEST(ForkKill, CrashingCloneTakesItsOwnClonesWithIt) {
  auto r = FlurryRun({Guest("fork_kill"), "orphans"}, kShortDeadline);
  ExpectFinished(r, 0);
  EXPECT_EQ(r.out, "join: 1\nclone 1: signaled 11\n") << r.Describe();
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.Describe();
  EXPECT_TRUE(StartsWith(lines[0], "flurry: clone 1: guest fault: ")) << r.Describe();
  EXPECT_LT(r.seconds, 5) << r.Describe();
}

TEST(ForkKill, TimeoutInterruptsJoin) {
  auto r = FlurryRun({"--timeout", "1s", Guest("fork_kill"), "joinspin"}, kShortDeadline);
  ExpectFinished(r, 124);
  EXPECT_EQ(r.out, "parent: joining\n") << r.Describe();
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.Describe();
  EXPECT_TRUE(StartsWith(lines[0], "flurry: ")) << r.Describe();
  EXPECT_LT(r.seconds, 5) << r.Describe();
}

// sf_kill ends a clone's whole subtree: clones of a killed clone do not live on (they would
// hold stdout open, and the run would time out).
TEST(ForkKill, KillingACloneEndsItsOwnClones) {
  auto r = FlurryRun({Guest("fork_kill"), "killnested"}, kShortDeadline);
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  EXPECT_EQ(r.out, "kill: 0\njoin: 1\nclone 1: killed\n") << r.Describe();
  EXPECT_LT(r.seconds, 5) << r.Describe();
}

TEST(ForkKill, TimeoutEndsNestedClones) {
  auto r = FlurryRun({"--timeout", "1s", Guest("fork_kill"), "spinnested"}, kShortDeadline);
  ExpectFinished(r, 124);
  EXPECT_EQ(r.out, "parent: spinning\n") << r.Describe();
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.Describe();
  EXPECT_TRUE(StartsWith(lines[0], "flurry: ")) << r.Describe();
  EXPECT_LT(r.seconds, 5) << r.Describe();
}

TEST(ForkKill, TimeoutEndsTheClonesToo) {
  auto r = FlurryRun({"--timeout", "1s", Guest("fork_kill"), "spin"}, kShortDeadline);
  ExpectFinished(r, 124);
  EXPECT_EQ(r.out, "parent: spin\n") << r.Describe();
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.Describe();
  EXPECT_TRUE(StartsWith(lines[0], "flurry: ")) << r.Describe();
  EXPECT_LT(r.seconds, 5) << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// 5. Checkpoints: clones created later resume with the memory of the checkpoint.

TEST(ForkCheckpoint, ClonesSeeTheCheckpointNotLaterWrites) {
  auto r = FlurryRun({Guest("fork_checkpoint")});
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  const std::string clone_line =
      "clone: status 1 x 1 id matches sf_id: yes checkpoint handle: same memory: checkpoint\n";
  EXPECT_EQ(r.out,
            "checkpoint: 0\n"
            "create_clones: 0\n"
            "sf_clone on that ticket: EALREADY\n"
            "create_clones again: EALREADY\n" +
                clone_line + clone_line + clone_line +
                "parent x=2\n"
                "create_clones (round 2): 0\n" +
                clone_line + clone_line +
                "parent x=3\n"
                "ids distinct and >= 1: yes (5 ids)\n")
      << r.Describe();
}

// sf_release_checkpoint: the clones already made from the checkpoint run on to their end; the
// checkpoint's snapshot process goes once they are joined, and a VM that takes and releases
// checkpoints keeps only those it holds (tests/guest/fork_checkpoint_release.c).
TEST(ForkCheckpoint, AReleasedCheckpointsCopyEndsAfterItsClones) {
  TempDir dir;
  Background vm(
      {"run", "--timeout", "120s", "--dir", dir.path().string(), Guest("fork_checkpoint_release")});
  ASSERT_TRUE(vm.WaitForLine("holding 1 checkpoint", 90s)) << vm.out() << vm.err();
  // 23 checkpoints were taken, 22 released: one snapshot process is left (they end a moment
  // after their release).
  int live = -1;
  for (int i = 0; i < 2000 && (live = LiveDescendantsNamed(vm.pid(), "flurry-snapshot")) != 1;
       ++i) {
    usleep(10'000);
  }
  EXPECT_EQ(live, 1);
  WriteFile(dir.path() / "done", "");
  const RunResult r = vm.Wait();
  ExpectFinished(r, 0);
  EXPECT_EQ(r.out, kCheckpointReleaseOutput) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
}

// sf_release_ticket gives an unused ticket back; a used one is released by sf_join only
// (tests/guest/fork_ticket_release.c). A local grant holds nothing that a later ticket would
// miss (it is counted from free memory at each request): this checks the calls' results; the
// slots a cluster ticket gives back are checked by RemotePlacement.AnUnusedTicketGivenBack...
TEST(ForkTickets, AnUnusedTicketCanBeGivenBack) {
  const RunResult r = FlurryRun({"--max-clones", "4", Guest("fork_ticket_release"), "4"});
  ExpectFinished(r, 0);
  EXPECT_EQ(r.out, TicketReleaseOutput(4)) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// 6. Crashing clones: reported as SIGNALED with the signal; the parent goes on.

TEST(ForkCrash, CrashesAreSignaledOutcomesAndTheParentSurvives) {
  auto r = FlurryRun({Guest("fork_crash")});
  ExpectFinished(r, 0);
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  EXPECT_EQ(Join(s.parent),
            "granted 4\n"
            "join: 4\n"
            "clone 1: exited 0, result 4 bytes\n"
            "clone 2: signaled 11, result 0 bytes\n"
            "clone 3: signaled 4, result 0 bytes\n"
            "clone 4: signaled 6, result 0 bytes\n"
            "parent alive\n")
      << r.Describe();
  EXPECT_EQ(s.clones.size(), 3u) << r.Describe();
  for (int id : {2, 3, 4})
    EXPECT_EQ(Join(s.clones[id]), "clone " + std::to_string(id) + ": crashing\n") << r.Describe();

  // One diagnostic line per crashed clone, naming it.
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 3u) << r.Describe();
  std::sort(lines.begin(), lines.end());
  EXPECT_TRUE(StartsWith(lines[0], "flurry: clone 2: guest fault: ")) << r.Describe();
  EXPECT_NE(lines[0].find("SIGSEGV"), std::string::npos) << r.Describe();
  EXPECT_TRUE(StartsWith(lines[1], "flurry: clone 3: guest fault: ")) << r.Describe();
  EXPECT_NE(lines[1].find("SIGILL"), std::string::npos) << r.Describe();
  EXPECT_TRUE(StartsWith(lines[2], "flurry: clone 4: ")) << r.Describe();
  EXPECT_NE(lines[2].find("SIGABRT"), std::string::npos) << r.Describe();
}

// Signal state travels into clones: a signal pending (blocked) at sf_clone is delivered in each
// clone when it unblocks it, and faults reach the clone's handler.
TEST(ForkSignals, PendingSignalsAndHandlersAreCloned) {
  auto r = FlurryRun({Guest("fork_signals")});
  ExpectFinished(r, 0);
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  EXPECT_EQ(Join(s.parent),
            "clone 0: handler for signal 10\n"
            "clone 1: kind 1 status 11\n"
            "clone 2: kind 1 status 20\n")
      << r.Describe();
  EXPECT_EQ(Join(s.clones[1]), "clone 1: handler for signal 10\n") << r.Describe();
  EXPECT_EQ(Join(s.clones[2]), "clone 2: handler for signal 10\nclone 2: caught SIGSEGV\n")
      << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
}

// Runs `guest`, which must end with status 0, print only well-formed lines (the parent's and
// the clones') and nothing on stderr; the parent's lines must be `expected`.
void ExpectParentLines(const std::string& guest, const std::string& expected) {
  auto r = FlurryRun({Guest(guest)});
  ExpectFinished(r, 0);
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  EXPECT_EQ(Join(s.parent), expected) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
}

// POSIX timers travel into clones: a timer's signal pending at sf_clone is pending in each
// clone, an armed timer fires there, and a SIGEV_NONE timer keeps its interval.
TEST(ForkTimers, PosixTimersAreCloned) {
  auto r = FlurryRun({Guest("fork_timers")});
  ExpectFinished(r, 0);
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  auto expected = [](int id) {
    const std::string clone = "clone " + std::to_string(id) + ": ";
    return clone + "timer A: signal 10, si_code -2, si_value 11\n" + clone +
           "timer B: signal 12, si_code -2, si_value 22\n" + clone +
           "timer C: interval 50000000 ns, armed 1\n";
  };
  EXPECT_EQ(Join(s.parent), expected(0) +
                                "clone 1: kind 1 status 11\n"
                                "clone 2: kind 1 status 12\n")
      << r.Describe();
  EXPECT_EQ(Join(s.clones[1]), expected(1)) << r.Describe();
  EXPECT_EQ(Join(s.clones[2]), expected(2)) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
}

// A clone's pipes are copies of the parent's with their unread bytes, connected end to end
// (a pipe without a reader or writer stays so); the parent's pipes keep their bytes
// (tests/guest/fork_pipes.c).
TEST(ForkPipes, AClonesPipesHoldTheirBytesAndConnectItsEnds) {
  ExpectParentLines("fork_pipes",
                    "clone 1: status 0\n"
                    "clone 2: status 0\n"
                    "parent read: before\n"
                    "parent read: after\n"
                    "parent read: kept\n");
}

// eventfds, timerfds, epoll instances and signalfds are the clone's own copies, as at the
// clone instant (tests/guest/fork_events.c).
TEST(ForkEvents, ACloneHasItsOwnEventObjects) {
  ExpectParentLines("fork_events",
                    "clone 1: status 0\n"
                    "clone 2: status 0\n"
                    "parent count: 5\n"
                    "parent timer fired: yes\n"
                    "parent signalfd: 10\n");
}

// Every thread is cloned: a waiter parked on a condition variable, a sleeper and a spinner
// each finish in their own VM, with that VM's clone ID. With the lanes the host has (by
// default), and with three: the threads on other lanes are gathered first.
class ForkThreads : public ::testing::TestWithParam<std::vector<std::string>> {};

TEST_P(ForkThreads, EveryThreadIsCloned) {
  std::vector<std::string> args = GetParam();
  args.push_back(Guest("fork_threads"));
  auto r = FlurryRun(args);
  ExpectFinished(r, 0);
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  auto workers = [](int id) {
    const std::string vm = "clone " + std::to_string(id) + ": ";
    return vm + "waiter returned " + std::to_string(100 + id) + "\n" + vm + "sleeper returned " +
           std::to_string(200 + id) + "\n" + vm + "spinner returned " + std::to_string(300 + id) +
           "\n";
  };
  EXPECT_EQ(Join(s.parent), workers(0) +
                                "clone 1: kind 1 status 11\n"
                                "clone 2: kind 1 status 12\n")
      << r.Describe();
  EXPECT_EQ(Join(s.clones[1]), workers(1)) << r.Describe();
  EXPECT_EQ(Join(s.clones[2]), workers(2)) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
}

INSTANTIATE_TEST_SUITE_P(Lanes, ForkThreads,
                         ::testing::Values(std::vector<std::string>{},
                                           std::vector<std::string>{"--cpus", "3"}));

TEST(ForkMemProtect, ProtectionsAreClonedAndEachVmChangesItsOwn) {
  auto r = FlurryRun({Guest("fork_memprotect")});
  ExpectFinished(r, 0);
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  EXPECT_EQ(Join(s.parent),
            "clone 1: kind 1 status 11\n"
            "clone 2: kind 1 status 12\n"
            "clone 0: read page 0: 1\n"
            "clone 0: read page 2: 3\n"
            "clone 0: SIGSEGV SEGV_ACCERR at page 2\n")
      << r.Describe();
  const std::string common =
      "read page 2: 3\n"
      "wrote page 0\n"
      "SIGSEGV SEGV_ACCERR at page 1\n"
      "SIGSEGV SEGV_ACCERR at page 2\n";
  auto prefixed = [](int id, const std::string& lines) {
    std::string out;
    for (const std::string& line : Lines(lines))
      out += "clone " + std::to_string(id) + ": " + line + "\n";
    return out;
  };
  EXPECT_EQ(Join(s.clones[1]), prefixed(1, common + "wrote page 2\nread page 2: 7\n"))
      << r.Describe();
  EXPECT_EQ(Join(s.clones[2]), prefixed(2, common)) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// 7. Misuse: every call returns the documented error, nothing hangs, the VM survives.

TEST(ForkMisuse, EveryMisuseReturnsItsErrno) {
  auto r = FlurryRun({"--max-clones", "4", Guest("fork_misuse")});
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  EXPECT_EQ(r.out,
            "sf_request_ticket(0): EINVAL\n"
            "sf_request_ticket(-5): EINVAL\n"
            "sf_id in the original VM: 0\n"
            "sf_exit in the original VM: EPERM\n"
            "sf_exit_with in the original VM: EPERM\n"
            "sf_clone(12345): EINVAL\n"
            "sf_clone(0): EINVAL\n"
            "sf_clone(-1): EINVAL\n"
            "sf_ticket_granted(12345): EINVAL\n"
            "sf_join(12345): EINVAL\n"
            "sf_kill(12345): EINVAL\n"
            "sf_checkpoint_parent(0x1): EFAULT\n"
            "sf_checkpoint_parent(NULL): EFAULT\n"
            "sf_request_ticket(1000000) > 0: 1\n"
            "granted: 4\n"
            "sf_join before sf_clone: EINVAL\n"
            "sf_kill before sf_clone: EINVAL\n"
            "sf_create_clones(bogus checkpoint): EINVAL\n"
            "sf_create_clones(checkpoint 0): EINVAL\n"
            "sf_clone: 0\n"
            "sf_clone again: EALREADY\n"
            "sf_join(outcomes 0x1): EFAULT\n"
            "sf_join(outcomes unmapped): EFAULT\n"
            "sf_join(max -1): EINVAL\n"
            "sf_join: 4\n"
            "clone: sf_id matches sf_clone: 1\n"
            "clone: sf_join(parent's ticket): EINVAL\n"
            "clone: sf_kill(parent's ticket): EINVAL\n"
            "clone: sf_ticket_granted(parent's ticket): EINVAL\n"
            "clone: sf_clone(parent's ticket): EINVAL\n"
            "clone: sf_exit_with(2 MiB blob): E2BIG\n"
            "clone: sf_exit_with(SF_MAX_RESULT + 1): E2BIG\n"
            "clone: sf_exit_with(0x1, 16): EFAULT\n"
            "clone: sf_exit_with(NULL, 16): EFAULT\n"
            "clone: sf_exit_with(unmapped, 16): EFAULT\n"
            "clone: sf_create_clones(bogus checkpoint, own ticket): EINVAL\n"
            "clone: sf_join(own unused ticket): EINVAL\n"
            "clones that agree: 4\n"
            "sf_join after sf_join: EINVAL\n"
            "sf_kill after sf_join: EINVAL\n"
            "sf_ticket_granted after sf_join: EINVAL\n"
            "sf_clone after sf_join: EINVAL\n"
            "sf_join(capacity 4): 1\n"
            "truncated: status 7 length 16 buffer 0123####\n"
            "sf_join(NULL, 0): 2\n"
            "sf_join(max 1) of 3 clones: 3\n"
            "slot 0: kind 1 status == id: yes; slot 1 id: -7\n"
            "sf_join(result 0x1): EFAULT\n"
            "sf_join after a faulting sf_join: EINVAL\n"
            "sf_join(SF_MAX_RESULT blob): 1\n"
            "SF_MAX_RESULT blob intact: 1\n"
            "done\n")
      << r.Describe();
}

}  // namespace
