// A CPU-bound workload (sorting and hashing), timed from inside the program, run both natively
// and in flurry on the same binary.
#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <ctime>
#include <vector>

static double NowNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main() {
  double start = NowNs();
  std::vector<uint64_t> v(4'000'000);
  uint64_t x = 88172645463325252ULL;
  for (auto& e : v) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    e = x;
  }
  std::sort(v.begin(), v.end());
  uint64_t h = 1469598103934665603ULL;
  for (int round = 0; round < 8; ++round) {
    for (uint64_t e : v) h = (h ^ e) * 1099511628211ULL;
  }
  double end = NowNs();
  std::printf("compute_ns=%.0f\nchecksum=%llu\n", end - start, static_cast<unsigned long long>(h));
  return 0;
}
