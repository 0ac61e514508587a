// cxx_features: exercises the C++ runtime (iostream, exceptions, algorithms, containers, large
// allocations that go through mmap/munmap). Prints one "ok ..." line per check, then "all ok".
#include <algorithm>
#include <cstdint>
#include <iostream>
#include <map>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

int failures = 0;

void Check(bool ok, const std::string& what) {
  if (ok) {
    std::cout << "ok " << what << "\n";
  } else {
    std::cout << "FAIL " << what << "\n";
    failures++;
  }
}

struct Thrower {
  [[noreturn]] static void Throw(int depth) {
    if (depth == 0) throw std::runtime_error("deep error");
    Throw(depth - 1);
  }
};

}  // namespace

int main() {
  std::cout << "cxx_features starting" << std::endl;

  // Exceptions: thrown through several frames, caught by base class; a custom type too.
  std::string caught;
  try {
    Thrower::Throw(10);
  } catch (const std::exception& e) {
    caught = e.what();
  }
  int custom = 0;
  try {
    throw 42;
  } catch (int v) {
    custom = v;
  }
  Check(caught == "deep error" && custom == 42, "exceptions");

  // std::sort of 100k pseudo-random ints.
  std::vector<int> v(100000);
  uint32_t x = 12345;
  for (auto& e : v) {
    x = x * 1103515245u + 12345u;
    e = static_cast<int>(x >> 1);
  }
  long long sum_before = std::accumulate(v.begin(), v.end(), 0LL);
  std::sort(v.begin(), v.end());
  long long sum_after = std::accumulate(v.begin(), v.end(), 0LL);
  Check(std::is_sorted(v.begin(), v.end()) && sum_before == sum_after, "sort 100000 ints");

  // std::map.
  std::map<std::string, int> m;
  for (int i = 0; i < 1000; i++) m["key" + std::to_string(i)] = i * i;
  bool map_ok = m.size() == 1000 && m["key999"] == 999 * 999 && m.begin()->first == "key0";
  Check(map_ok, "map");

  // std::string.
  std::string s;
  for (int i = 0; i < 10000; i++) s += static_cast<char>('a' + i % 26);
  std::string upper = s.substr(0, 5);
  std::transform(upper.begin(), upper.end(), upper.begin(), [](char c) { return c - 32; });
  Check(s.size() == 10000 && s.find("xyz") == 23 && upper == "ABCDE", "string");

  // A 64 MiB vector (mmap'd by malloc), touched, freed, and allocated again (munmap + mmap).
  bool big_ok = true;
  for (int round = 0; round < 3; round++) {
    auto big = std::make_unique<std::vector<uint64_t>>((64u << 20) / sizeof(uint64_t));
    for (size_t i = 0; i < big->size(); i += 512) (*big)[i] = i;
    for (size_t i = 0; i < big->size(); i += 512) big_ok = big_ok && (*big)[i] == i;
  }
  Check(big_ok, "vector 64 MiB");

  if (failures != 0) {
    std::cout << failures << " checks failed" << std::endl;
    return 1;
  }
  std::cout << "all ok" << std::endl;
  return 0;
}
