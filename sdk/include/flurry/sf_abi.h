/* The flurry guest <-> VMM ABI for VM fork: hypercall numbers and structures. Shared by the SDK
 * (guest side) and the VMM. Documented in docs/sdk.md. C and C++. */
#ifndef FLURRY_SF_ABI_H_
#define FLURRY_SF_ABI_H_

#include <stdint.h>

/* Hypercalls are `syscall` instructions with numbers no Linux syscall uses. Arguments and the
 * result travel like a Linux syscall's: rdi, rsi, rdx, r10; rax = result or -errno. Run outside
 * flurry, they return -ENOSYS. */
#define SF_HC_BASE 0x0f1a0000L
#define SF_HC_REQUEST_TICKET (SF_HC_BASE + 0) /* (n) -> ticket > 0 */
#define SF_HC_TICKET_INFO (SF_HC_BASE + 1)    /* (ticket) -> granted m */
#define SF_HC_CLONE (SF_HC_BASE + 2)          /* (ticket) -> 0 parent, 1..m clone id */
#define SF_HC_EXIT (SF_HC_BASE + 3)          /* (status, result, len) -> never returns in a clone */
#define SF_HC_JOIN (SF_HC_BASE + 4)          /* (ticket, outcomes, max) -> m */
#define SF_HC_KILL (SF_HC_BASE + 5)          /* (ticket) -> 0 */
#define SF_HC_CHECKPOINT (SF_HC_BASE + 6)    /* (checkpoint_out) -> 0 caller, id in clones */
#define SF_HC_CREATE_CLONES (SF_HC_BASE + 7) /* (checkpoint, ticket) -> 0 */
#define SF_HC_ID (SF_HC_BASE + 8)            /* () -> clone id (0: not a clone) */
#define SF_HC_RELEASE_CHECKPOINT (SF_HC_BASE + 9) /* (checkpoint) -> 0 */
#define SF_HC_RELEASE_TICKET (SF_HC_BASE + 10)    /* (ticket) -> 0 */
#define SF_HC_COUNT 11

#define SF_MAX_RESULT (1u << 20) /* largest result blob sf_exit may carry */

/* How a child ended (sf_outcome.kind). */
#define SF_OUTCOME_EXITED 1   /* sf_exit, exit() or return from main: status is valid */
#define SF_OUTCOME_SIGNALED 2 /* the child crashed: signal is valid */
#define SF_OUTCOME_KILLED 3   /* sf_kill ended it */
#define SF_OUTCOME_LOST 4     /* its VMM vanished without reporting (e.g. its host died) */

/* One child's outcome, filled by sf_join. The caller sets `result` and `result_capacity` (or
 * leaves them 0); the VMM copies up to that many bytes of the child's result blob and sets
 * result_length to the blob's full length. */
struct sf_outcome {
  int32_t id;
  int32_t kind;
  int32_t status;
  int32_t signal;
  uint64_t result_length;
  uint64_t result;          /* guest pointer (void*) */
  uint64_t result_capacity; /* bytes available at result */
};

#ifdef __cplusplus
static_assert(sizeof(sf_outcome) == 40, "sf_outcome is ABI");
#else
_Static_assert(sizeof(struct sf_outcome) == 40, "sf_outcome is ABI");
#endif

#endif /* FLURRY_SF_ABI_H_ */
