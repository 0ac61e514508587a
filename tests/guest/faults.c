// faults: argv[1] = null | ud2 | div0 performs that fault.
#include <string.h>
#include <unistd.h>

static void Say(const char* s) { write(1, s, strlen(s)); }

int main(int argc, char** argv) {
  if (argc < 2) {
    Say("usage: faults null|ud2|div0\n");
    return 2;
  }
  if (strcmp(argv[1], "null") == 0) {
    Say("faulting: null\n");
    *(volatile int*)0 = 1;
  } else if (strcmp(argv[1], "ud2") == 0) {
    Say("faulting: ud2\n");
    __asm__ volatile("ud2");
  } else if (strcmp(argv[1], "div0") == 0) {
    Say("faulting: div0\n");
    volatile int numerator = 7, zero = 0;
    volatile int r = numerator / zero;  // a real idiv (1 / x would be folded into a compare)
    (void)r;
  } else {
    Say("unknown fault\n");
    return 2;
  }
  Say("still alive after fault\n");
  return 3;
}
