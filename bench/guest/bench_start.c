// Prints CLOCK_REALTIME at the start of main (read through the vDSO: no exit), so the harness
// can measure launch -> main.
#include <stdio.h>
#include <time.h>

int main(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  printf("main_ns=%lld\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
  return 0;
}
