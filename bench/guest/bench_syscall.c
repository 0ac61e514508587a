// Times syscall round trips (getppid) and clock_gettime calls from inside the program.
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

int main(int argc, char** argv) {
  int syscalls = argc > 1 ? atoi(argv[1]) : 20000;
  int clocks = argc > 2 ? atoi(argv[2]) : 1000000;
  double start = now_ns();
  for (int i = 0; i < syscalls; i++) syscall(SYS_getppid);
  double mid = now_ns();
  struct timespec ts;
  for (int i = 0; i < clocks; i++) clock_gettime(CLOCK_MONOTONIC, &ts);
  double end = now_ns();
  printf("syscall_ns=%.1f\nclock_gettime_ns=%.1f\n", (mid - start) / syscalls,
         (end - mid) / clocks);
  return 0;
}
