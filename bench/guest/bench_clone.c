// Clone latency and parent pause: the parent touches MIB mebibytes, then sf_clone()s N
// children. Each child reports when it first ran; the parent reports when sf_clone returned.
//   bench_clone [MIB [N [HOLD_MS]]]   (256, 8, 0): each child ends HOLD_MS after it started.
// Prints clone_latency_ns (sf_clone called -> last child running), parent_pause_ns and
// ticket_request_ns (sf_request_ticket's time).
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "flurry/sf.h"

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

int main(int argc, char** argv) {
  size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 256;
  int n = argc > 2 ? atoi(argv[2]) : 8;
  long hold_ms = argc > 3 ? atol(argv[3]) : 0;
  char* memory = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return 1;
  memset(memory, 1, mib << 20);
  int64_t asked = now_ns();
  sf_ticket_t ticket = sf_request_ticket(n);
  int64_t granted = now_ns();
  if (ticket < 0 || sf_ticket_granted(ticket) != n) {
    fprintf(stderr, "ticket: %lld granted %d\n", (long long)ticket, sf_ticket_granted(ticket));
    return 1;
  }
  fflush(stdout);
  int64_t start = now_ns();
  int id = sf_clone(ticket);
  int64_t resumed = now_ns();
  if (id > 0) {
    // Stay a while (HOLD_MS): as clones that have work to do, not ending while others start.
    if (hold_ms > 0) {
      struct timespec hold = {hold_ms / 1000, (long)(hold_ms % 1000) * 1000000L};
      nanosleep(&hold, NULL);
    }
    sf_exit_with(0, &resumed, sizeof resumed);
  }
  if (id < 0) return 2;
  struct sf_outcome* outcomes = calloc((size_t)n, sizeof *outcomes);
  int64_t* started = calloc((size_t)n, sizeof *started);
  for (int i = 0; i < n; i++) {
    outcomes[i].result = (uint64_t)(uintptr_t)&started[i];
    outcomes[i].result_capacity = sizeof started[i];
  }
  if (sf_join(ticket, outcomes, n) != n) return 3;
  int64_t last = 0;
  for (int i = 0; i < n; i++) {
    if (outcomes[i].kind != SF_OUTCOME_EXITED) return 4;
    if (started[i] > last) last = started[i];
  }
  printf("clone_latency_ns=%lld\nparent_pause_ns=%lld\nticket_request_ns=%lld\n",
         (long long)(last - start), (long long)(resumed - start), (long long)(granted - asked));
  return 0;
}
