/* The flurry SDK: each call is one hypercall (a `syscall` with a flurry number). */
#include "flurry/sf.h"

#include <stdio.h>

static inline long hypercall(long nr, long a, long b, long c) {
  long ret;
  __asm__ volatile("syscall"
                   : "=a"(ret)
                   : "a"(nr), "D"(a), "S"(b), "d"(c)
                   : "rcx", "r11", "memory");
  return ret;
}

sf_ticket_t sf_request_ticket(int n) { return hypercall(SF_HC_REQUEST_TICKET, n, 0, 0); }
int sf_ticket_granted(sf_ticket_t ticket) {
  return (int)hypercall(SF_HC_TICKET_INFO, ticket, 0, 0);
}
/* Buffered stdio output is flushed before the VM is copied (or it would be printed once per
 * clone) and before a clone ends (or it would be lost). */
int sf_clone(sf_ticket_t ticket) {
  fflush(NULL);
  return (int)hypercall(SF_HC_CLONE, ticket, 0, 0);
}
int sf_id(void) { return (int)hypercall(SF_HC_ID, 0, 0, 0); }
int sf_exit(void) { return sf_exit_with(0, NULL, 0); }
int sf_exit_with(int status, const void* result, size_t length) {
  fflush(NULL);
  return (int)hypercall(SF_HC_EXIT, status, (long)result, (long)length);
}
int sf_join(sf_ticket_t ticket, struct sf_outcome* outcomes, int max) {
  return (int)hypercall(SF_HC_JOIN, ticket, (long)outcomes, max);
}
int sf_kill(sf_ticket_t ticket) { return (int)hypercall(SF_HC_KILL, ticket, 0, 0); }
int sf_checkpoint_parent(sf_checkpoint_t* checkpoint) {
  fflush(NULL);
  return (int)hypercall(SF_HC_CHECKPOINT, (long)checkpoint, 0, 0);
}
int sf_create_clones(sf_checkpoint_t checkpoint, sf_ticket_t ticket) {
  return (int)hypercall(SF_HC_CREATE_CLONES, checkpoint, ticket, 0);
}
int sf_release_checkpoint(sf_checkpoint_t checkpoint) {
  return (int)hypercall(SF_HC_RELEASE_CHECKPOINT, checkpoint, 0, 0);
}
int sf_release_ticket(sf_ticket_t ticket) {
  return (int)hypercall(SF_HC_RELEASE_TICKET, ticket, 0, 0);
}
