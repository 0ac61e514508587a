// fork_kill: sf_kill ends clones that would never end by themselves.
//
// usage: fork_kill join | nojoin | exited | crash | spin | orphans | killnested | spinnested
//                  | joinspin
//   join:   4 clones: 1 and 2 spin in user mode, 3 sleeps for an hour, 4 spins calling getpid.
//           The parent waits 300 ms, calls sf_kill and sf_join and prints each outcome, whether
//           kill + join took under 3 s, and what sf_kill/sf_join return for the released ticket.
//   nojoin: 2 spinning clones; the parent exits (status 3) without joining: flurry must end
//           them itself.
//   exited: clone 1 exits at once with status 5, clone 2 spins; the parent waits 500 ms, then
//           kills and joins: clone 1 is still EXITED 5, clone 2 KILLED.
//   crash:  2 spinning clones; the parent dereferences NULL: flurry must end the clones too.
//   spin:   2 spinning clones; the parent spins too (for --timeout): all must end.
//   orphans: clone 1 clones 2 spinning grandchildren, then crashes; the parent joins it
//           (SIGNALED 11) and exits: the grandchildren must have ended with it.
//   killnested: clone 1 clones 2 spinning grandchildren, then spins; the parent waits 300 ms,
//           kills and joins clone 1, and exits: the grandchildren must end too.
//   spinnested: the same tree, but the parent spins (for --timeout): everything must end.
//   joinspin: 2 spinning clones; the parent blocks in sf_join (for --timeout).
#include <errno.h>
#include <flurry/sf.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double NowMs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static void BusyWaitMs(double ms) {
  double end = NowMs() + ms;
  while (NowMs() < end) {
  }
}

static const char* KindName(int kind) {
  switch (kind) {
    case SF_OUTCOME_EXITED:
      return "exited";
    case SF_OUTCOME_SIGNALED:
      return "signaled";
    case SF_OUTCOME_KILLED:
      return "killed";
    case SF_OUTCOME_LOST:
      return "lost";
  }
  return "?";
}

static void Spin(void) {
  for (;;) __asm__ volatile("" ::: "memory");
}

static void PrintOutcomes(const struct sf_outcome* out, int n) {
  for (int i = 0; i < n; ++i) {
    printf("clone %d: %s", out[i].id, KindName(out[i].kind));
    if (out[i].kind == SF_OUTCOME_EXITED) printf(" %d", out[i].status);
    printf("\n");
  }
}

int main(int argc, char** argv) {
  const char* mode = argc > 1 ? argv[1] : "join";
  if (strcmp(mode, "nojoin") == 0) {
    sf_ticket_t t = sf_request_ticket(2);
    int id = sf_clone(t);
    if (id > 0) Spin();
    printf("exiting without join (clone returned %d)\n", id);
    return 3;
  }
  if (strcmp(mode, "crash") == 0 || strcmp(mode, "spin") == 0) {
    sf_ticket_t t = sf_request_ticket(2);
    int id = sf_clone(t);
    if (id > 0) Spin();
    printf("parent: %s\n", mode);
    fflush(stdout);
    BusyWaitMs(200);
    if (strcmp(mode, "crash") == 0) *(volatile int*)0 = 1;
    Spin();
  }
  if (strcmp(mode, "killnested") == 0 || strcmp(mode, "spinnested") == 0) {
    sf_ticket_t t = sf_request_ticket(1);
    int id = sf_clone(t);
    if (id > 0) {
      sf_ticket_t mine = sf_request_ticket(2);
      sf_clone(mine);
      Spin();  // clone 1 and its two clones
    }
    BusyWaitMs(300);
    if (strcmp(mode, "spinnested") == 0) {
      printf("parent: spinning\n");
      fflush(stdout);
      Spin();
    }
    printf("kill: %d\n", sf_kill(t));
    struct sf_outcome out[1];
    memset(out, 0, sizeof out);
    int n = sf_join(t, out, 1);
    printf("join: %d\n", n);
    printf("clone %d: %s\n", out[0].id, KindName(out[0].kind));
    return 0;
  }
  if (strcmp(mode, "joinspin") == 0) {
    sf_ticket_t t = sf_request_ticket(2);
    if (sf_clone(t) > 0) Spin();
    printf("parent: joining\n");
    fflush(stdout);
    struct sf_outcome out[2];
    memset(out, 0, sizeof out);
    printf("join returned %d\n", sf_join(t, out, 2));
    return 0;
  }
  if (strcmp(mode, "orphans") == 0) {
    sf_ticket_t t = sf_request_ticket(1);
    int id = sf_clone(t);
    if (id > 0) {
      sf_ticket_t mine = sf_request_ticket(2);
      if (sf_clone(mine) > 0) Spin();
      BusyWaitMs(100);
      *(volatile int*)0 = 1;
    }
    struct sf_outcome out[1];
    memset(out, 0, sizeof out);
    int n = sf_join(t, out, 1);
    printf("join: %d\n", n);
    printf("clone %d: %s %d\n", out[0].id, KindName(out[0].kind), out[0].signal);
    return 0;
  }
  if (strcmp(mode, "exited") == 0) {
    sf_ticket_t t = sf_request_ticket(2);
    int id = sf_clone(t);
    if (id == 1) sf_exit_with(5, NULL, 0);
    if (id > 0) Spin();
    BusyWaitMs(500);
    printf("kill: %d\n", sf_kill(t));
    struct sf_outcome out[2];
    memset(out, 0, sizeof out);
    int n = sf_join(t, out, 2);
    printf("join: %d\n", n);
    PrintOutcomes(out, n);
    return 0;
  }

  sf_ticket_t t = sf_request_ticket(4);
  printf("granted %d\n", sf_ticket_granted(t));
  int id = sf_clone(t);
  if (id == 1 || id == 2) Spin();
  if (id == 3) {
    struct timespec hour = {3600, 0};
    nanosleep(&hour, NULL);
    sf_exit_with(33, NULL, 0);  // a clone that is not killed would say so
  }
  if (id == 4) {
    for (;;) getpid();
  }
  BusyWaitMs(300);
  double start = NowMs();
  int k = sf_kill(t);
  struct sf_outcome out[4];
  memset(out, 0, sizeof out);
  int n = sf_join(t, out, 4);
  double elapsed = NowMs() - start;
  printf("kill: %d\n", k);
  printf("join: %d\n", n);
  PrintOutcomes(out, n);
  printf("kill + join under 3 s: %s\n", elapsed < 3000 ? "yes" : "NO");
  printf("kill again: %s\n", sf_kill(t) == -EINVAL ? "EINVAL" : "unexpected");
  printf("join again: %s\n", sf_join(t, out, 4) == -EINVAL ? "EINVAL" : "unexpected");
  return 0;
}
