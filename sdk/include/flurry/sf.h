/* flurry/sf.h: VM fork for programs running in flurry (the SnowFlock API).
 *
 *   sf_ticket_t t = sf_request_ticket(8);     // ask for 8 clones; granted m = sf_ticket_granted(t)
 *   int id = sf_clone(t);                     // 0 in the parent, 1..m in each clone
 *   if (id > 0) { ...work...; sf_exit_with(0, &result, sizeof result); }
 *   struct sf_outcome out[8] = {0};
 *   sf_join(t, out, 8);                       // wait for every clone; collect results
 *
 * Every call returns a negative errno on misuse (never hangs, never crashes the VM).
 * Link with -lflurry_sf (static). See docs/sdk.md. */
#ifndef FLURRY_SF_H_
#define FLURRY_SF_H_

#include <stddef.h>
#include <stdint.h>

#include "flurry/sf_abi.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef int64_t sf_ticket_t;
typedef int64_t sf_checkpoint_t;

/* Asks for n clones. Returns a ticket (> 0) granting m <= n clones (local policy: a per-VM
 * cap, free memory, a host-wide cap), or -EINVAL for n <= 0. */
sf_ticket_t sf_request_ticket(int n);
/* The number of clones a ticket grants, or a negative errno for an unknown ticket. */
int sf_ticket_granted(sf_ticket_t ticket);
/* Gives back a ticket that was never used: its grant (in a cluster VM, its slots on the hosts)
 * is free for later requests. Returns 0, -EINVAL for a ticket unknown here, or -EALREADY for a
 * ticket already used by sf_clone or sf_create_clones (release that with sf_join). */
int sf_release_ticket(sf_ticket_t ticket);
/* Clones this VM m times. Returns 0 in the parent (which continues at once) and the clone's
 * ID (1..m, unique within the clone family) in each clone. */
int sf_clone(sf_ticket_t ticket);
/* This VM's clone ID: 0 in the original VM. */
int sf_id(void);
/* Ends a clone (status 0). Returns -EPERM if called in a VM that is not a clone. */
int sf_exit(void);
/* Ends a clone with an exit status and a result blob (at most SF_MAX_RESULT bytes) that the
 * parent receives in sf_join. -E2BIG for a larger blob, -EFAULT for a bad pointer. */
int sf_exit_with(int status, const void* result, size_t length);
/* Waits until every clone of the ticket has ended, fills up to `max` outcomes (may be NULL
 * with max 0), releases the ticket, and returns the number of clones. */
int sf_join(sf_ticket_t ticket, struct sf_outcome* outcomes, int max);
/* Ends every clone of the ticket now. Their outcomes (SF_OUTCOME_KILLED) still come from
 * sf_join, which must be called to release the ticket. */
int sf_kill(sf_ticket_t ticket);
/* Takes an immutable checkpoint of this VM. Returns 0 here (filling *checkpoint) and, in each
 * clone later created from the checkpoint with sf_create_clones, that clone's ID. */
int sf_checkpoint_parent(sf_checkpoint_t* checkpoint);
/* Creates the ticket's clones from a checkpoint: they resume inside sf_checkpoint_parent with
 * the memory the VM had at the checkpoint. Returns 0 in the caller. */
int sf_create_clones(sf_checkpoint_t checkpoint, sf_ticket_t ticket);
/* Releases a checkpoint: no more clones can be created from it, and what holds it (its frozen
 * memory) is freed once the clones already created from it have been joined. Returns 0, or
 * -EINVAL for a checkpoint unknown here (or released already). */
int sf_release_checkpoint(sf_checkpoint_t checkpoint);

#ifdef __cplusplus
}
#endif

#endif /* FLURRY_SF_H_ */
