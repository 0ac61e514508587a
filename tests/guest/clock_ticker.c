// clock_ticker: a guest that reports its monotonic clock, for snapshot and clone tests.
//
// usage: clock_ticker [TICKS [INTERVAL_MS]]   (defaults 40, 50)
//
// Prints "tick N vdso NS sys NS" (N = 0..TICKS-1), one write(2) each: CLOCK_MONOTONIC in
// nanoseconds read through the vDSO (libc's clock_gettime) and through the raw syscall. Sleeps
// INTERVAL_MS between ticks (resuming a sleep cut short), then prints "done" and exits 0.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static long long Ns(const struct timespec* ts) { return ts->tv_sec * 1000000000LL + ts->tv_nsec; }

int main(int argc, char** argv) {
  const int ticks = argc > 1 ? atoi(argv[1]) : 40;
  const int interval_ms = argc > 2 ? atoi(argv[2]) : 50;
  char line[128];
  for (int i = 0; i < ticks; ++i) {
    struct timespec vdso, sys;
    clock_gettime(CLOCK_MONOTONIC, &vdso);
    if (syscall(SYS_clock_gettime, CLOCK_MONOTONIC, &sys) != 0) return 2;
    snprintf(line, sizeof line, "tick %d vdso %lld sys %lld\n", i, Ns(&vdso), Ns(&sys));
    (void)!write(1, line, strlen(line));
    struct timespec left = {interval_ms / 1000, (long)(interval_ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
  }
  (void)!write(1, "done\n", 5);
  return 0;
}
