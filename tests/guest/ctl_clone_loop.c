// ctl_clone_loop: a bounded loop printing its clone ID, for host-initiated clones
// (flurry ctl SOCKET clone N).
//
// usage: ctl_clone_loop [ITERATIONS [INTERVAL_MS]]   (defaults 60, 50)
//
// Prints "id=<sf_id()> iter=<i>" for i = 0..ITERATIONS-1 (one write(2) each), sleeping
// INTERVAL_MS in between, then "id=<sf_id()> done" and exits 0. A clone made from outside
// resumes mid-loop and finishes the remaining iterations under its own ID.
#include <errno.h>
#include <flurry/sf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static void Say(const char* text) { (void)!write(1, text, strlen(text)); }

int main(int argc, char** argv) {
  const int iterations = argc > 1 ? atoi(argv[1]) : 60;
  const int interval_ms = argc > 2 ? atoi(argv[2]) : 50;
  char line[64];
  for (int i = 0; i < iterations; ++i) {
    snprintf(line, sizeof line, "id=%d iter=%d\n", sf_id(), i);
    Say(line);
    struct timespec left = {interval_ms / 1000, (long)(interval_ms % 1000) * 1000000L};
    while (nanosleep(&left, &left) != 0 && errno == EINTR) {
    }
  }
  snprintf(line, sizeof line, "id=%d done\n", sf_id());
  Say(line);
  return 0;
}
