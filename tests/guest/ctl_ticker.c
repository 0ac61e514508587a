// ctl_ticker: a guest whose progress can be watched from outside (flurry ctl pause/resume).
//
// usage: ctl_ticker [TICKS [INTERVAL_MS]]   (defaults 100, 50)
//
// Prints "tick N" (N = 0..TICKS-1), one write(2) each, sleeping INTERVAL_MS between ticks, then
// "done" and exits 0. A sleep cut short (EINTR) is resumed, so every tick is printed once.
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void Say(const char* text) { (void)!write(1, text, strlen(text)); }

int main(int argc, char** argv) {
  const int ticks = argc > 1 ? atoi(argv[1]) : 100;
  const int interval_ms = argc > 2 ? atoi(argv[2]) : 50;
  char line[64];
  for (int i = 0; i < ticks; ++i) {
    snprintf(line, sizeof line, "tick %d\n", i);
    Say(line);
    struct timespec left = {interval_ms / 1000, (long)(interval_ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
  }
  Say("done\n");
  return 0;
}
