// clone_exec N PROGRAM ARGS...: forks the VM N times with sf_clone, and each clone runs
// PROGRAM (a static program inside --dir, e.g. busybox) with ARGS by execve, CLONE_ID=<its
// ID> in its environment; the parent joins them and prints each one's exit status. Shows VM
// fork before execve: every clone is a VM of its own whose program then forks processes of
// its own (a shell's pipelines).
#include <flurry/sf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: clone_exec N PROGRAM [ARGS...]\n");
    return 2;
  }
  const int n = atoi(argv[1]);
  sf_ticket_t ticket = sf_request_ticket(n);
  if (ticket < 0 || sf_ticket_granted(ticket) != n) {
    fprintf(stderr, "clone_exec: %d clones not granted\n", n);
    return 1;
  }
  const int id = sf_clone(ticket);
  if (id < 0) {
    fprintf(stderr, "clone_exec: sf_clone: %d\n", id);
    return 1;
  }
  if (id > 0) {
    char variable[32];
    snprintf(variable, sizeof variable, "%d", id);
    setenv("CLONE_ID", variable, 1);
    execv(argv[2], argv + 2);
    perror("clone_exec: execv");
    return 127;
  }
  struct sf_outcome outcomes[64];
  memset(outcomes, 0, sizeof outcomes);
  const int joined = sf_join(ticket, outcomes, n < 64 ? n : 64);
  for (int i = 0; i < joined; ++i) {
    printf("clone %d: kind %d status %d\n", outcomes[i].id, (int)outcomes[i].kind,
           outcomes[i].status);
  }
  return 0;
}
