// Helpers for the memory-on-demand tests: the counters `flurry restore --stats` prints.
#pragma once

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

}  // namespace flurry_test
