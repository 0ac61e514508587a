// fork_ticket_release N: a ticket given back unused (sf_release_ticket) frees its grant for the
// next request; a used ticket is released by sf_join only.
//
// Asks for N clones twice: the first ticket is released unused, the second is cloned and
// joined. On a cluster whose hosts have N slots in all, the second request is granted all N
// only because the first gave its slots back. Each clone exits with status = its ID.
// Output (parent only), with S = N (N + 1) / 2:
//   first ticket: granted N
//   release: 0
//   release again: EINVAL
//   granted after release: EINVAL
//   clone after release: EINVAL
//   second ticket: granted N
//   release after clone: EALREADY
//   joined N clones, status sum S
//   release after join: EINVAL
#include <errno.h>
#include <flurry/sf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guest_check.h"

#define kMaxClones 64

int main(int argc, char** argv) {
  const int n = argc > 1 ? atoi(argv[1]) : 4;
  if (n < 1 || n > kMaxClones) return 2;
  sf_ticket_t first = sf_request_ticket(n);
  printf("first ticket: granted %s\n", ErrnoName(first < 0 ? first : sf_ticket_granted(first)));
  printf("release: %s\n", ErrnoName(sf_release_ticket(first)));
  printf("release again: %s\n", ErrnoName(sf_release_ticket(first)));
  printf("granted after release: %s\n", ErrnoName(sf_ticket_granted(first)));
  printf("clone after release: %s\n", ErrnoName(sf_clone(first)));

  sf_ticket_t second = sf_request_ticket(n);
  printf("second ticket: granted %s\n", ErrnoName(second < 0 ? second : sf_ticket_granted(second)));
  if (second < 0) return 1;
  fflush(stdout);
  const int id = sf_clone(second);
  if (id > 0) {
    sf_exit_with(id, NULL, 0);
    return 100;  // not reached
  }
  if (id < 0) {
    printf("clone: %s\n", ErrnoName(id));
    return 1;
  }
  printf("release after clone: %s\n", ErrnoName(sf_release_ticket(second)));
  struct sf_outcome outcomes[kMaxClones];
  memset(outcomes, 0, sizeof outcomes);
  const int joined = sf_join(second, outcomes, kMaxClones);
  int sum = 0;
  for (int i = 0; i < joined && i < kMaxClones; ++i) {
    sum += outcomes[i].kind == SF_OUTCOME_EXITED ? outcomes[i].status : 1000;
  }
  printf("joined %d clones, status sum %d\n", joined, sum);
  printf("release after join: %s\n", ErrnoName(sf_release_ticket(second)));
  return 0;
}
