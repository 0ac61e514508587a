// avoid_work: a job that gives each memory-on-demand avoidance heuristic (src/memory/avoidance.h)
// something to save, run in clones (sf_clone: local, or on a cluster's hosts) or in a VM
// restored from a page server (bench/avoidance_bench.sh, tests/integration/*).
//
// usage: avoid_work clone N MIB            the parent prepares, N clones do the work
//        avoid_work sleep SECONDS MIB [FILE]  prepares, prints "ready", sleeps SECONDS (the
//                                         caller pauses and serves the VM there), works
//
// Prepared before the clone instant (in the image): an MIB MiB array of data, two 1 MiB
// page-aligned buffers filled with 0xa5, and 4 MiB mapped but never written. The work:
//   * sums the first half of the array (pages the source must send),
//   * mallocs 8 MiB and writes it (`fresh`: allocated after the image),
//   * fills the first buffer with getrandom(2) (the VMM writes whole pages, as for read(2):
//     `overwritten`), and with FILE read(2)s 1 MiB of FILE into the second,
//   * reads the 4 MiB never written (`zero`: not populated in the image).
// Then it prints "sum=<hex> fresh=<n> stale=<n> file=<hex> zero=<n> read_pages=<n>" (a function
// of MIB and FILE only; stale: pages of the first buffer still all 0xa5, i.e. 0; read_pages: the
// pages the work touched) and "work_ms=<t>". A clone ends with sf_exit_with(0, that line); the
// parent joins and prints "joined N".
#include <fcntl.h>
#include <flurry/sf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#define kBuffer (1u << 20)
#define kFresh (8u << 20)
#define kUntouched (4u << 20)
#define kPage 4096u

static uint64_t* g_array;
static size_t g_words;
static uint8_t* g_random;
static uint8_t* g_file;
static volatile uint8_t* g_untouched;

static double NowMs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int Prepare(size_t mib) {
  g_words = mib * (1u << 20) / sizeof(uint64_t);
  g_array = malloc(g_words * sizeof(uint64_t));
  g_random = aligned_alloc(kPage, kBuffer);
  g_file = aligned_alloc(kPage, kBuffer);
  g_untouched = mmap(NULL, kUntouched, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (g_array == NULL || g_random == NULL || g_file == NULL || g_untouched == MAP_FAILED) return 0;
  for (size_t i = 0; i < g_words; ++i) g_array[i] = i * 0x9e3779b97f4a7c15ULL;
  memset(g_random, 0xa5, kBuffer);
  memset(g_file, 0xa5, kBuffer);
  return 1;
}

// The work after the clone instant; writes its result line into `line`. 0 on failure.
static int Work(const char* file, char* line, size_t size) {
  const double start = NowMs();
  uint64_t sum = 0;
  for (size_t i = 0; i < g_words / 2; ++i) sum = sum * 31 + g_array[i];

  uint8_t* fresh = malloc(kFresh);
  if (fresh == NULL) return 0;
  memset(fresh, 1, kFresh);
  uint64_t fresh_sum = 0;
  for (size_t i = 0; i < kFresh; i += kPage) fresh_sum += fresh[i];

  for (size_t done = 0; done < kBuffer;) {
    const ssize_t n = getrandom(g_random + done, kBuffer - done, 0);
    if (n <= 0) return 0;
    done += (size_t)n;
  }
  uint64_t stale = 0;
  for (size_t p = 0; p < kBuffer; p += kPage) {
    size_t same = 0;
    while (same < kPage && g_random[p + same] == 0xa5) ++same;
    stale += same == kPage;
  }
  uint64_t file_hash = 0;
  uint64_t read_pages = g_words / 2 * sizeof(uint64_t) / kPage + kFresh / kPage + kBuffer / kPage +
                        kUntouched / kPage;
  if (file != NULL) {
    const int fd = open(file, O_RDONLY);
    if (fd < 0 || read(fd, g_file, kBuffer) != (ssize_t)kBuffer) return 0;
    close(fd);
    file_hash = 1469598103934665603ULL;
    for (size_t i = 0; i < kBuffer; ++i) file_hash = (file_hash ^ g_file[i]) * 1099511628211ULL;
    read_pages += kBuffer / kPage;
  }

  uint64_t zero = 0;
  for (size_t i = 0; i < kUntouched; i += kPage) zero += g_untouched[i];

  snprintf(line, size, "sum=%llx fresh=%llu stale=%llu file=%llx zero=%llu read_pages=%llu\n",
           (unsigned long long)sum, (unsigned long long)fresh_sum, (unsigned long long)stale,
           (unsigned long long)file_hash, (unsigned long long)zero, (unsigned long long)read_pages);
  fputs(line, stdout);
  printf("work_ms=%.1f\n", NowMs() - start);
  fflush(stdout);
  return 1;
}

int main(int argc, char** argv) {
  const int clone_mode = argc == 4 && strcmp(argv[1], "clone") == 0;
  const int sleep_mode = (argc == 4 || argc == 5) && strcmp(argv[1], "sleep") == 0;
  if (!clone_mode && !sleep_mode) {
    fputs("usage: avoid_work clone N MIB | avoid_work sleep SECONDS MIB [FILE]\n", stderr);
    return 2;
  }
  if (!Prepare((size_t)atol(argv[3]))) {
    fputs("out of memory\n", stderr);
    return 3;
  }
  char line[256];
  if (sleep_mode) {
    puts("ready");
    fflush(stdout);
    sleep((unsigned)atoi(argv[2]));
    return Work(argc == 5 ? argv[4] : NULL, line, sizeof line) ? 0 : 4;
  }
  const sf_ticket_t ticket = sf_request_ticket(atoi(argv[2]));
  if (ticket < 0) return 5;
  const int id = sf_clone(ticket);
  if (id < 0) return 6;
  if (id > 0) {
    const int ok = Work(NULL, line, sizeof line);
    sf_exit_with(ok ? 0 : 4, line, ok ? strlen(line) : 0);
  }
  struct sf_outcome outcomes[64];
  memset(outcomes, 0, sizeof outcomes);
  const int n = sf_join(ticket, outcomes, 64);
  int failed = 0;
  for (int i = 0; i < n; ++i) failed += outcomes[i].kind != SF_OUTCOME_EXITED || outcomes[i].status;
  printf("joined %d failed %d\n", n, failed);
  return failed == 0 ? 0 : 7;
}
