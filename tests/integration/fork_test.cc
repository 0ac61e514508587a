// End-to-end tests of VM fork: guest programs (tests/guest/fork_*.c) use the SDK (flurry/sf.h)
// to clone their VM, and these tests check exactly what the parent and the clones printed and
// how flurry exited. Clone output is "[clone N] "-prefixed and its position among the parent's
// lines is not fixed, so most tests split stdout into the parent's lines (checked exactly, in
// order) and each clone's lines (checked exactly, in order per clone).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "harness.h"

namespace {

using namespace flurry_test;

// Fork tests are quick; a run that takes longer than this is hung.
constexpr int kDeadline = 30;
// For runs whose failure mode is leftover clones holding stdout open (a hang).
constexpr int kShortDeadline = 10;

RunResult FlurryRun(std::vector<std::string> args, int deadline = kDeadline) {
  args.insert(args.begin(), "run");
  return Flurry(std::move(args), WithDeadline(deadline));
}

// stdout split into the parent's lines and each clone's lines (prefix removed).
struct SplitOutput {
  std::vector<std::string> parent;
  std::map<int, std::vector<std::string>> clones;
  std::vector<std::string> malformed;  // "[clone" lines that do not parse
};

SplitOutput Split(const std::string& text) {
  SplitOutput s;
  for (const auto& line : Lines(text)) {
    if (!StartsWith(line, "[clone ")) {
      s.parent.push_back(line);
      continue;
    }
    size_t close = line.find("] ");
    char* end = nullptr;
    long id = std::strtol(line.c_str() + 7, &end, 10);
    if (close == std::string::npos || end != line.c_str() + close || id < 1) {
      s.malformed.push_back(line);
      continue;
    }
    s.clones[static_cast<int>(id)].push_back(line.substr(close + 2));
  }
  return s;
}

std::string Join(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) text += line + "\n";
  return text;
}

void ExpectFinished(const RunResult& r, int code) {
  EXPECT_FALSE(r.timed_out) << r.Describe();
  ASSERT_TRUE(r.exited) << "flurry died of a signal" << r.Describe();
  EXPECT_EQ(r.exit_code, code) << r.Describe();
}

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

// ---------------------------------------------------------------------------------------------
// 8. Output: clone lines are prefixed and never cut; --no-clone-prefix drops the prefix.

std::string Payload(int width, int id, int line) {
  return std::string(width, static_cast<char>('a' + (7 * id + line) % 26));
}

std::string Pad3(int n) {
  std::string s = std::to_string(n);
  return std::string(s.size() < 3 ? 3 - s.size() : 0, '0') + s;
}

// A line with every run of 10 or more equal characters shown as "c{count}".
std::string Abbreviate(const std::string& line) {
  std::string out;
  for (size_t i = 0; i < line.size();) {
    size_t j = i;
    while (j < line.size() && line[j] == line[i]) ++j;
    if (j - i >= 10)
      out += std::string(1, line[i]) + "{" + std::to_string(j - i) + "}";
    else
      out += line.substr(i, j - i);
    i = j;
  }
  return out;
}

// Checks fork_output's stdout and stderr for `clones` clones printing `lines` lines of `width`.
void ExpectWholeLines(const RunResult& r, int clones, int lines, int width, bool prefixed) {
  // Every stdout line is a parent line, or one clone's line exactly.
  std::vector<std::string> parent;
  std::map<int, std::vector<int>> seen;  // clone -> line numbers in order of appearance
  for (const auto& line : Lines(r.out)) {
    std::string body = line;
    int prefix_id = -1;
    if (prefixed && StartsWith(line, "[clone ")) {
      size_t close = line.find("] ");
      ASSERT_NE(close, std::string::npos) << "bad line: " << line << r.Describe();
      prefix_id = std::atoi(line.c_str() + 7);
      body = line.substr(close + 2);
    }
    int j = -1, id = -1, consumed = 0;
    if (std::sscanf(body.c_str(), "line %d of clone %d: %n", &j, &id, &consumed) == 2 &&
        consumed > 0) {
      ASSERT_TRUE(!prefixed || prefix_id == id) << "prefix/clone mismatch: " << line;
      ASSERT_TRUE(body == "line " + Pad3(j) + " of clone " + std::to_string(id) + ": " +
                              Payload(width, id, j))
          << "a clone line was cut or mixed with another (runs of a letter shown as x{count}):\n"
          << Abbreviate(line);
      seen[id].push_back(j);
    } else {
      ASSERT_EQ(prefix_id, -1) << "unexpected clone line: " << line;
      parent.push_back(line);
    }
  }
  std::vector<std::string> expected_parent;
  for (int j = 0; j < lines; ++j) expected_parent.push_back("parent line " + std::to_string(j));
  expected_parent.push_back("joined " + std::to_string(clones));
  EXPECT_EQ(Join(parent), Join(expected_parent)) << r.Describe();
  std::vector<int> in_order;
  for (int j = 0; j < lines; ++j) in_order.push_back(j);
  ASSERT_EQ(seen.size(), static_cast<size_t>(clones)) << r.Describe();
  for (const auto& [id, numbers] : seen) {
    EXPECT_GE(id, 1);
    EXPECT_LE(id, clones);
    EXPECT_EQ(numbers, in_order) << "clone " << id << "'s lines lost or reordered";
  }

  // stderr: only the clones' err lines, each whole, in order per clone.
  std::map<int, std::vector<int>> err_seen;
  for (const auto& line : Lines(r.err)) {
    std::string body = line;
    if (prefixed) {
      ASSERT_TRUE(StartsWith(line, "[clone ")) << "unexpected stderr line: " << line;
      body = line.substr(line.find("] ") + 2);
    }
    int j = -1, id = -1;
    ASSERT_EQ(std::sscanf(body.c_str(), "err %d of clone %d:", &j, &id), 2) << line;
    ASSERT_TRUE(body == "err " + Pad3(j) + " of clone " + std::to_string(id) + ": " +
                            Payload(100, id, 4 * j))
        << "a clone's stderr line was cut:\n"
        << Abbreviate(line);
    if (prefixed) {
      EXPECT_TRUE(StartsWith(line, "[clone " + std::to_string(id) + "] ")) << line;
    }
    err_seen[id].push_back(j);
  }
  std::vector<int> err_order;
  for (int j = 0; j < (lines + 3) / 4; ++j) err_order.push_back(j);
  EXPECT_EQ(err_seen.size(), static_cast<size_t>(clones)) << r.Describe();
  for (const auto& [id, numbers] : err_seen) EXPECT_EQ(numbers, err_order) << "clone " << id;
}

TEST(ForkOutput, CloneLinesArePrefixedAndNeverCut) {
  auto r = FlurryRun({Guest("fork_output"), "4", "200", "300"});
  ExpectFinished(r, 0);
  ExpectWholeLines(r, 4, 200, 300, /*prefixed=*/true);
}

TEST(ForkOutput, EightClonesWithLongerLines) {
  auto r = FlurryRun({Guest("fork_output"), "8", "200", "2000"});
  ExpectFinished(r, 0);
  ExpectWholeLines(r, 8, 200, 2000, /*prefixed=*/true);
}

// A line longer than PIPE_BUF (4096 bytes) is not written to a pipe atomically by one
// write(2): other writers' data can land in the middle of it when the pipe fills up. The
// lines must still come out whole (below LineWriter::kMaxLine, 64 KiB).
TEST(ForkOutput, LinesLongerThanPipeBufAreNotCut) {
  auto r = FlurryRun({Guest("fork_output"), "8", "100", "6000"});
  ExpectFinished(r, 0);
  ExpectWholeLines(r, 8, 100, 6000, /*prefixed=*/true);
}

TEST(ForkOutput, NoClonePrefix) {
  auto r = FlurryRun({"--no-clone-prefix", Guest("fork_output"), "4", "200", "300"});
  ExpectFinished(r, 0);
  EXPECT_EQ(r.out.find("[clone"), std::string::npos) << r.Describe();
  EXPECT_EQ(r.err.find("[clone"), std::string::npos) << r.Describe();
  ExpectWholeLines(r, 4, 200, 300, /*prefixed=*/false);
}

// ---------------------------------------------------------------------------------------------
// 9. Identity: a clone is a copy of the whole machine — the parent's pid, ppid and clock — with
// its own clone ID and its own entropy.

TEST(ForkIdentity, ClonesKeepThePidAndClockAndDrawTheirOwnEntropy) {
  auto r = FlurryRun({Guest("fork_identity")});
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  auto lines = Lines(r.out);
  ASSERT_EQ(lines.size(), 5u) << r.Describe();
  std::set<int> ids;
  std::set<std::string> rands;
  int parent_pid = -1, parent_ppid = -1;
  for (size_t i = 0; i < lines.size(); ++i) {
    int id = -1, pid = -1, ppid = -1;
    long long clock_us = -1, sys_clock_us = -1;
    char rand[64] = {};
    ASSERT_EQ(std::sscanf(lines[i].c_str(),
                          "id %d pid %d ppid %d rand %63s clock_us %lld sys_clock_us %lld", &id,
                          &pid, &ppid, rand, &clock_us, &sys_clock_us),
              6)
        << lines[i] << r.Describe();
    // CLOCK_MONOTONIC goes on in a clone from where the parent's was, through the vDSO and the
    // syscall alike: never before the parent's reading just before sf_clone, and close to it.
    EXPECT_GE(clock_us, 0) << lines[i] << r.Describe();
    EXPECT_LT(clock_us, 5000000) << lines[i] << r.Describe();
    EXPECT_GE(sys_clock_us, 0) << lines[i] << r.Describe();
    EXPECT_LT(sys_clock_us, 5000000) << lines[i] << r.Describe();
    EXPECT_EQ(std::string(rand).size(), 32u) << lines[i];
    EXPECT_EQ(lines[i].find("failed"), std::string::npos) << lines[i];
    EXPECT_EQ(id, static_cast<int>(i)) << r.Describe();  // the parent (0), then clones 1..4
    EXPECT_GT(pid, 1) << lines[i];
    if (i == 0) {
      parent_pid = pid;
      parent_ppid = ppid;
    } else {
      EXPECT_EQ(pid, parent_pid) << "a clone's getpid() is its parent's" << r.Describe();
      EXPECT_EQ(ppid, parent_ppid) << "a clone's getppid() is its parent's" << r.Describe();
    }
    ids.insert(id);
    rands.insert(rand);
  }
  EXPECT_EQ(ids.size(), 5u) << r.Describe();
  EXPECT_EQ(rands.size(), 5u) << "getrandom() repeats across clones" << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// 10. A clone ending like a process (exit, return from main, _exit) is EXITED with the status.

TEST(ForkExit, ExitAndReturnFromMainAreExitedOutcomes) {
  auto r = FlurryRun({Guest("fork_exit")});
  ExpectFinished(r, 0);
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  EXPECT_EQ(Join(s.parent),
            "clone 1: exited 7, result 0 bytes\n"
            "clone 2: exited 42, result 0 bytes\n"
            "clone 3: exited 3, result 0 bytes\n"
            "clone 4: exited 5, result 0 bytes\n"
            "clone 5: exited 0, result 0 bytes\n")
      << r.Describe();
  EXPECT_EQ(s.clones.size(), 2u) << r.Describe();
  EXPECT_EQ(Join(s.clones[1]), "clone 1 calls exit(7)\natexit in clone 1\n") << r.Describe();
  EXPECT_EQ(Join(s.clones[2]), "clone 2 returns 42\natexit in clone 2\n") << r.Describe();
  // A partial last line is flushed when the clone ends (no newline added).
  EXPECT_EQ(r.err, "[clone 5] no newline from clone 5") << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// Files: each clone has its own copy of the file offsets and a private copy-on-write view of a
// writable --dir (its writes reach neither the host directory nor its siblings).

TEST(ForkFiles, OwnOffsetsAndPrivateWritableDir) {
  TempDir t;
  WriteFile(t.path() / "data.txt", "0123456789ABCDEFGHIJ");
  // The clones' copy-on-write layers go to $TMPDIR: a private one, to see them removed.
  TempDir layers;
  RunOptions options = WithDeadline(kDeadline);
  options.env = {{"TMPDIR", layers.path().string()}};
  auto r = Flurry({"run", "--dir", t.path().string() + ":rw", Guest("fork_files")}, options);
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  EXPECT_EQ(r.out,
            "parent read: 01234\n"
            "clone 1: read 56789, status 0\n"
            "clone 2: read 56789, status 0\n"
            "parent read after join: 56789\n"
            "parent sees /clone_1.txt: no\n"
            "parent sees /clone_2.txt: no\n")
      << r.Describe();
  std::set<std::string> names;
  for (const auto& e : fs::directory_iterator(t.path())) names.insert(e.path().filename());
  EXPECT_EQ(names, std::set<std::string>{"data.txt"}) << "a clone's write reached --dir";
  EXPECT_EQ(ReadFile(t.path() / "data.txt"), "0123456789ABCDEFGHIJ");
  // The clones' copy-on-write layers ($TMPDIR/flurry-<family>-<id>) are gone.
  EXPECT_TRUE(fs::is_empty(layers.path())) << "clone layers were left in $TMPDIR";
}

// A clone's file offsets are the ones at the instant of sf_clone, even if the parent reads on
// before the clone has started.
TEST(ForkFiles, OffsetsAreTheOnesAtSfClone) {
  TempDir t;
  WriteFile(t.path() / "data.txt", "0123456789ABCDEFGHIJ");
  auto r = FlurryRun({"--dir", t.path().string(), Guest("fork_files"), "after"});
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  EXPECT_EQ(r.out,
            "parent read: 01234\n"
            "parent read right after sf_clone: 56789\n"
            "clone 1: read 56789, status 0\n"
            "clone 2: read 56789, status 0\n")
      << r.Describe();
}

// Clones created from a checkpoint get the file offsets of the checkpoint.
TEST(ForkFiles, CheckpointClonesGetTheCheckpointsOffsets) {
  TempDir t;
  WriteFile(t.path() / "data.txt", "0123456789ABCDEFGHIJ");
  auto r = FlurryRun({"--dir", t.path().string(), Guest("fork_files"), "checkpoint"});
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  EXPECT_EQ(r.out,
            "parent read: 01234\n"
            "parent read after checkpoint: 56789\n"
            "clone 1: read 56789, status 0\n"
            "clone 2: read 56789, status 0\n")
      << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// 11. The example: examples/montecarlo_pi.

uint64_t MonteCarloInside(uint64_t trials, int darts) {
  auto splitmix = [](uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
  };
  uint64_t inside = 0;
  for (uint64_t t = 0; t < trials; ++t) {
    uint64_t s = splitmix(t) | 1;
    auto next = [&s] {
      s ^= s << 13;
      s ^= s >> 7;
      s ^= s << 17;
      return s;
    };
    for (int d = 0; d < darts; ++d) {
      uint64_t x = next() >> 33, y = next() >> 33;
      inside += x * x + y * y < (1ULL << 62);
    }
  }
  return inside;
}

TEST(ForkExample, MonteCarloPiVerifiesAgainstSerial) {
  const uint64_t trials = 100003;
  const int darts = 16;
  auto r =
      FlurryRun({FLURRY_EXAMPLE_MONTECARLO_PI, "3", std::to_string(trials), std::to_string(darts)});
  ExpectFinished(r, 0);
  EXPECT_EQ(r.err, "") << r.Describe();
  auto s = Split(r.out);
  EXPECT_TRUE(s.malformed.empty()) << r.Describe();
  // Each clone announces its slice (under its prefix); the parent prints the rest.
  ASSERT_EQ(s.clones.size(), 3u) << r.Describe();
  for (int i = 0; i < 3; ++i) {
    const uint64_t per = trials / 3, first = i * per, last = i == 2 ? trials : first + per;
    EXPECT_EQ(Join(s.clones[i + 1]), "counting trials [" + std::to_string(first) + ", " +
                                         std::to_string(last) + ") on flurry\n")
        << r.Describe();
  }
  const auto& lines = s.parent;
  ASSERT_GE(lines.size(), 8u) << r.Describe();
  EXPECT_EQ(lines[0], "montecarlo_pi: 100003 trials x 16 darts, 3 clones") << r.Describe();
  for (int i = 0; i < 3; ++i) {
    const uint64_t per = trials / 3, first = i * per, last = i == 2 ? trials : first + per;
    EXPECT_TRUE(StartsWith(
        lines[2 + i],
        "clone " + std::to_string(i + 1) + ": trials [" + std::to_string(first) + ", " +
            std::to_string(last) +
            "): " + std::to_string(MonteCarloInside(last, darts) - MonteCarloInside(first, darts)) +
            " darts inside, "))
        << lines[2 + i] << r.Describe();
  }
  const uint64_t inside = MonteCarloInside(trials, darts);
  const std::string expected_inside = "inside: " + std::to_string(inside) + " of " +
                                      std::to_string(trials * darts) + " darts, pi ~ ";
  bool found_inside = false, verified = false;
  for (const auto& line : lines) {
    if (StartsWith(line, expected_inside)) found_inside = true;
    if (StartsWith(line, "verified: the clones' combined result equals the serial computation"))
      verified = true;
  }
  EXPECT_TRUE(found_inside) << "expected a line starting '" << expected_inside << "'"
                            << r.Describe();
  EXPECT_TRUE(verified) << r.Describe();
}

}  // namespace
