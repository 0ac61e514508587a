// Helpers for the memory-on-demand tests: the counters `flurry restore --stats` prints.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <sstream>
#include <string>

#include "harness.h"

namespace flurry_test {

// "flurry: memory on demand: faults=1 fetched=2 ..." on stderr -> {faults: 1, fetched: 2, ...}
// (empty when there is no such line).
inline std::map<std::string, double> OnDemandCounters(const std::string& err) {
  std::map<std::string, double> counters;
  const std::string prefix = "flurry: memory on demand: ";
  for (const std::string& line : Lines(err)) {
    if (!StartsWith(line, prefix)) continue;
    std::istringstream words(line.substr(prefix.size()));
    std::string word;
    while (words >> word) {
      const size_t eq = word.find('=');
      if (eq != std::string::npos) counters[word.substr(0, eq)] = std::stod(word.substr(eq + 1));
    }
  }
  return counters;
}

// Exit status 0, the result on stdout, and only the counters line on stderr.
inline void ExpectExitWithStats(const RunResult& r) {
  EXPECT_FALSE(r.timed_out) << r.Describe();
  EXPECT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.Describe();
  EXPECT_TRUE(StartsWith(lines[0], "flurry: memory on demand: ")) << r.Describe();
}

// The "sum=..." line tests/guest/on_demand.c prints ("" if none).
inline std::string ResultLine(const std::string& out) {
  for (const std::string& line : Lines(out)) {
    if (StartsWith(line, "sum=")) return line;
  }
  return "";
}

}  // namespace flurry_test
