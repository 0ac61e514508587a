// End-to-end tests of VM fork, continued from fork_test.cc: clone output, identity, ending like
// a process, files across sf_clone, and the montecarlo_pi example.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "fork_support.h"
#include "harness.h"

namespace {

using namespace flurry_test;

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
