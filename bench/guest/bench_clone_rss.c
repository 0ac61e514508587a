// Per-clone memory: the parent touches MIB mebibytes and clones N children that write nothing;
// each child prints its VMM's pid ("clone_pid=P") and stays alive for a second so the harness
// can read /proc/P/smaps_rollup.
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "flurry/sf.h"

int main(int argc, char** argv) {
  size_t mib = argc > 1 ? (size_t)atol(argv[1]) : 256;
  int n = argc > 2 ? atoi(argv[2]) : 4;
  char* memory = mmap(NULL, mib << 20, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (memory == MAP_FAILED) return 1;
  memset(memory, 1, mib << 20);
  sf_ticket_t ticket = sf_request_ticket(n);
  int id = sf_clone(ticket);
  if (id > 0) {
    printf("clone_pid=%d\n", getpid());
    fflush(stdout);
    struct timespec second = {1, 0};
    nanosleep(&second, NULL);
    sf_exit();
  }
  printf("parent_pid=%d\n", getpid());
  fflush(stdout);
  return sf_join(ticket, NULL, 0) == n ? 0 : 1;
}
