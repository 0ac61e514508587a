// fork_crash: clones that crash do not take the parent with them.
//
// 4 clones: 1 ends normally (sf_exit_with status 0), 2 dereferences NULL, 3 executes ud2,
// 4 calls abort(). Each crashing clone first prints "clone N: crashing". The parent joins and
// prints "clone N: exited S" / "clone N: signaled SIG" per clone, then "parent alive".
#include <flurry/sf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void) {
  sf_ticket_t t = sf_request_ticket(4);
  printf("granted %d\n", sf_ticket_granted(t));
  int id = sf_clone(t);
  if (id == 1) sf_exit_with(0, "fine", 4);
  if (id > 1) {
    printf("clone %d: crashing\n", id);
    fflush(stdout);
    if (id == 2) *(volatile int*)0 = 1;
    if (id == 3) __asm__ volatile("ud2");
    if (id == 4) abort();
    sf_exit_with(99, NULL, 0);  // not reached
  }
  struct sf_outcome out[4];
  memset(out, 0, sizeof out);
  int n = sf_join(t, out, 4);
  printf("join: %d\n", n);
  for (int i = 0; i < n; ++i) {
    if (out[i].kind == SF_OUTCOME_EXITED)
      printf("clone %d: exited %d, result %llu bytes\n", out[i].id, out[i].status,
             (unsigned long long)out[i].result_length);
    else if (out[i].kind == SF_OUTCOME_SIGNALED)
      printf("clone %d: signaled %d, result %llu bytes\n", out[i].id, out[i].signal,
             (unsigned long long)out[i].result_length);
    else
      printf("clone %d: kind %d\n", out[i].id, out[i].kind);
  }
  printf("parent alive\n");
  return 0;
}
