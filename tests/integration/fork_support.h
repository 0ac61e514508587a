// Helpers of the VM fork integration tests (fork_test.cc, fork_output_test.cc): running
// flurry with a deadline and splitting stdout into the parent's and each clone's lines.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <map>
#include <string>
#include <vector>

#include "harness.h"

namespace flurry_test {

// Fork tests are quick; a run that takes longer than this is hung.
constexpr int kDeadline = 30;
// For runs whose failure mode is leftover clones holding stdout open (a hang).
constexpr int kShortDeadline = 10;

inline RunResult FlurryRun(std::vector<std::string> args, int deadline = kDeadline) {
  args.insert(args.begin(), "run");
  return Flurry(std::move(args), WithDeadline(deadline));
}

// stdout split into the parent's lines and each clone's lines (prefix removed).
struct SplitOutput {
  std::vector<std::string> parent;
  std::map<int, std::vector<std::string>> clones;
  std::vector<std::string> malformed;  // "[clone" lines that do not parse
};

inline SplitOutput Split(const std::string& text) {
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

inline std::string Join(const std::vector<std::string>& lines) {
  std::string text;
  for (const auto& line : lines) text += line + "\n";
  return text;
}

inline void ExpectFinished(const RunResult& r, int code) {
  EXPECT_FALSE(r.timed_out) << r.Describe();
  ASSERT_TRUE(r.exited) << "flurry died of a signal" << r.Describe();
  EXPECT_EQ(r.exit_code, code) << r.Describe();
}

// What tests/guest/fork_checkpoint_release.c prints when every release did what it must.
inline constexpr const char* kCheckpointReleaseOutput =
    "create_clones: 0\n"
    "release: 0\n"
    "release again: EINVAL\n"
    "create_clones after release: EINVAL\n"
    "clone: kind 1 status 1\n"
    "clone: kind 1 status 1\n"
    "20 checkpoints taken and released: yes\n"
    "holding 1 checkpoint\n"
    "done\n";

// What tests/guest/fork_ticket_release.c prints for N clones when every release did what it
// must.
inline std::string TicketReleaseOutput(int n) {
  const std::string m = std::to_string(n);
  std::string out;
  out += "first ticket: granted " + m + "\n";
  out += "release: 0\n";
  out += "release again: EINVAL\n";
  out += "granted after release: EINVAL\n";
  out += "clone after release: EINVAL\n";
  out += "second ticket: granted " + m + "\n";
  out += "release after clone: EALREADY\n";
  out += "joined " + m + " clones, status sum " + std::to_string(n * (n + 1) / 2) + "\n";
  out += "release after join: EINVAL\n";
  return out;
}

}  // namespace flurry_test
