// on_demand: a guest whose memory is restored on demand, exercising each way a page is
// installed (src/memory/lazy_pages.h).
//
// usage: on_demand MIB FILE SECONDS   (FILE: a file in --dir of at least 64 KiB)
//
// Fills an MIB MiB array (data the restored VM must fetch), prints "ready", then sleeps
// SECONDS — the test pauses the VM and serves or snapshots it there (a restored copy makes the
// sleep again). After the sleep (in the parent or in a restored copy) it:
//   * allocates and touches 8 MiB of fresh memory (never fetched),
//   * reads 64 KiB of FILE into a page-aligned buffer that the parent had filled (overwritten
//     whole: never fetched),
//   * touches 4 MiB the parent mapped but never wrote (zero in the image: never fetched),
//   * sums the array (fetched) and prints "sum=<hex> fresh=<n> file=<hex> zero=<n>".
// The sum line is a function of MIB and FILE only; a last line "work_ms=<n>" says how long the
// work after the sleep took (for bench/remote_restore_netns.sh).
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static void Say(const char* text) { (void)!write(1, text, strlen(text)); }

int main(int argc, char** argv) {
  if (argc != 4) {
    Say("usage: on_demand MIB FILE SECONDS\n");
    return 2;
  }
  const size_t words = (size_t)atol(argv[1]) * (1u << 20) / sizeof(uint64_t);
  uint64_t* a = malloc(words * sizeof(uint64_t));
  for (size_t i = 0; i < words; ++i) a[i] = i * 0x9e3779b97f4a7c15ULL;
  uint8_t* target = aligned_alloc(4096, 64 << 10);
  memset(target, 0xa5, 64 << 10);
  volatile uint8_t* untouched =
      mmap(NULL, 4 << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (untouched == MAP_FAILED) return 5;
  Say("ready\n");
  sleep((unsigned)atoi(argv[3]));
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);

  uint8_t* fresh = malloc(8 << 20);
  memset(fresh, 1, 8 << 20);
  uint64_t fresh_sum = 0;
  for (size_t i = 0; i < (8u << 20); i += 4096) fresh_sum += fresh[i];

  int fd = open(argv[2], O_RDONLY);
  if (fd < 0 || read(fd, target, 64 << 10) != (64 << 10)) {
    Say("cannot read FILE\n");
    return 4;
  }
  uint64_t file_hash = 1469598103934665603ULL;
  for (size_t i = 0; i < (64u << 10); ++i) file_hash = (file_hash ^ target[i]) * 1099511628211ULL;

  uint64_t zero = 0;
  for (size_t i = 0; i < (4u << 20); i += 4096) zero += untouched[i];

  uint64_t sum = 0;
  for (size_t i = 0; i < words; ++i) sum = sum * 31 + a[i];
  char out[128];
  snprintf(out, sizeof out, "sum=%llx fresh=%llu file=%llx zero=%llu\n", (unsigned long long)sum,
           (unsigned long long)fresh_sum, (unsigned long long)file_hash, (unsigned long long)zero);
  Say(out);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  snprintf(out, sizeof out, "work_ms=%.1f\n",
           (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6);
  Say(out);
  return 0;
}
