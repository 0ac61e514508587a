// ctl_compute: a long deterministic computation, for snapshot/restore mid-loop.
//
// usage: ctl_compute [ROUNDS_PER_STEP [MIB]]   (defaults 20000000, 16)
//
// Prints "started", fills an MIB MiB array, then runs 10 steps of ROUNDS_PER_STEP rounds of
// pseudo-random read-modify-writes over the array (no syscalls inside a step), printing
// "progress K/10" before step K, and finally "checksum=<hex>" over the whole array and the
// generator state. Everything is a function of the arguments, so the output is the same
// whether the run was interrupted, snapshotted and restored, or not. Output is written with
// write(2) (no stdio buffer in guest memory to be duplicated by a snapshot).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void Say(const char* text) { (void)!write(1, text, strlen(text)); }

int main(int argc, char** argv) {
  const long rounds = argc > 1 ? atol(argv[1]) : 20000000L;
  const long mib = argc > 2 ? atol(argv[2]) : 16;
  const size_t words = (size_t)mib * (1u << 20) / sizeof(uint64_t);
  char line[96];
  Say("started\n");
  uint64_t* a = malloc(words * sizeof(uint64_t));
  if (a == NULL) {
    Say("malloc failed\n");
    return 1;
  }
  for (size_t i = 0; i < words; ++i) a[i] = i * 0x9e3779b97f4a7c15ULL;
  uint64_t x = 0x123456789abcdefULL;
  for (int step = 0; step < 10; ++step) {
    snprintf(line, sizeof line, "progress %d/10\n", step);
    Say(line);
    for (long r = 0; r < rounds; ++r) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      const size_t i = (size_t)(x % words);
      a[i] = a[i] * 6364136223846793005ULL + x;
    }
  }
  uint64_t sum = x;
  for (size_t i = 0; i < words; ++i) sum = (sum ^ a[i]) * 0x100000001b3ULL;
  snprintf(line, sizeof line, "checksum=%016llx\n", (unsigned long long)sum);
  Say(line);
  return 0;
}
