// fork_misuse: every SDK call misused, in the parent and in clones (run with --max-clones 4).
// Each check prints "what: RESULT" where RESULT is an errno name (or a value); clones send
// their results back in their result blob and the parent prints those of clone 1 (and checks
// all clones agree). Nothing may hang or crash; the last line is "done".
#include <errno.h>
#include <flurry/sf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "guest_check.h"

static void Check(const char* what, long r) { printf("%s: %s\n", what, ErrnoName(r)); }

#define kBigBlob (2u << 20)
static uint8_t g_big[kBigBlob];
static void* const kBad = (void*)1;
static void* const kUnmapped = (void*)0x7fff00000000ULL;

// What the clones check, in order (their results travel in the blob).
static const char* const kCloneChecks[] = {
    "clone: sf_id matches sf_clone",
    "clone: sf_join(parent's ticket)",
    "clone: sf_kill(parent's ticket)",
    "clone: sf_ticket_granted(parent's ticket)",
    "clone: sf_clone(parent's ticket)",
    "clone: sf_exit_with(2 MiB blob)",
    "clone: sf_exit_with(SF_MAX_RESULT + 1)",
    "clone: sf_exit_with(0x1, 16)",
    "clone: sf_exit_with(NULL, 16)",
    "clone: sf_exit_with(unmapped, 16)",
    "clone: sf_create_clones(bogus checkpoint, own ticket)",
    "clone: sf_join(own unused ticket)",
};
#define kCloneCheckCount ((int)(sizeof kCloneChecks / sizeof kCloneChecks[0]))

static void CloneChecks(int id, sf_ticket_t parent_ticket) {
  int64_t r[kCloneCheckCount];
  struct sf_outcome out[4];
  memset(out, 0, sizeof out);
  int i = 0;
  r[i++] = sf_id() == id ? 1 : 0;
  r[i++] = sf_join(parent_ticket, out, 4);
  r[i++] = sf_kill(parent_ticket);
  r[i++] = sf_ticket_granted(parent_ticket);
  r[i++] = sf_clone(parent_ticket);
  r[i++] = sf_exit_with(0, g_big, kBigBlob);
  r[i++] = sf_exit_with(0, g_big, SF_MAX_RESULT + 1);
  r[i++] = sf_exit_with(0, kBad, 16);
  r[i++] = sf_exit_with(0, NULL, 16);
  r[i++] = sf_exit_with(0, kUnmapped, 16);
  sf_ticket_t own = sf_request_ticket(1);
  r[i++] = sf_create_clones(12345, own);
  r[i++] = sf_join(own, out, 4);
  sf_exit_with(0, r, sizeof r);
}

static void PrintOutcome(const char* what, const struct sf_outcome* o) {
  printf("%s: id %d kind %d status %d signal %d length %llu\n", what, o->id, o->kind, o->status,
         o->signal, (unsigned long long)o->result_length);
}

int main(void) {
  struct sf_outcome out[4];
  memset(out, 0, sizeof out);

  // No ticket.
  Check("sf_request_ticket(0)", sf_request_ticket(0));
  Check("sf_request_ticket(-5)", sf_request_ticket(-5));
  Check("sf_id in the original VM", sf_id());
  Check("sf_exit in the original VM", sf_exit());
  Check("sf_exit_with in the original VM", sf_exit_with(1, "x", 1));
  Check("sf_clone(12345)", sf_clone(12345));
  Check("sf_clone(0)", sf_clone(0));
  Check("sf_clone(-1)", sf_clone(-1));
  Check("sf_ticket_granted(12345)", sf_ticket_granted(12345));
  Check("sf_join(12345)", sf_join(12345, out, 4));
  Check("sf_kill(12345)", sf_kill(12345));
  Check("sf_checkpoint_parent(0x1)", sf_checkpoint_parent(kBad));
  Check("sf_checkpoint_parent(NULL)", sf_checkpoint_parent(NULL));

  // A ticket, before sf_clone.
  sf_ticket_t t = sf_request_ticket(1000000);
  Check("sf_request_ticket(1000000) > 0", t > 0);
  Check("granted", sf_ticket_granted(t));
  Check("sf_join before sf_clone", sf_join(t, out, 4));
  Check("sf_kill before sf_clone", sf_kill(t));
  Check("sf_create_clones(bogus checkpoint)", sf_create_clones(999, t));
  Check("sf_create_clones(checkpoint 0)", sf_create_clones(0, t));

  int id = sf_clone(t);
  if (id > 0) CloneChecks(id, t);
  Check("sf_clone", id);
  Check("sf_clone again", sf_clone(t));
  Check("sf_join(outcomes 0x1)", sf_join(t, kBad, 4));
  Check("sf_join(outcomes unmapped)", sf_join(t, kUnmapped, 4));
  Check("sf_join(max -1)", sf_join(t, out, -1));

  int64_t results[4][kCloneCheckCount];
  memset(results, 0, sizeof results);
  for (int i = 0; i < 4; ++i) {
    out[i].result = (uint64_t)(uintptr_t)results[i];
    out[i].result_capacity = sizeof results[i];
  }
  Check("sf_join", sf_join(t, out, 4));
  int agree = 0;
  for (int i = 0; i < 4; ++i) {
    if (out[i].kind == SF_OUTCOME_EXITED && out[i].status == 0 &&
        out[i].result_length == sizeof results[i] &&
        memcmp(results[i], results[0], sizeof results[0]) == 0)
      ++agree;
    else
      PrintOutcome("unexpected outcome", &out[i]);
  }
  for (int k = 0; k < kCloneCheckCount; ++k) Check(kCloneChecks[k], results[0][k]);
  Check("clones that agree", agree);

  // The ticket is released.
  Check("sf_join after sf_join", sf_join(t, out, 4));
  Check("sf_kill after sf_join", sf_kill(t));
  Check("sf_ticket_granted after sf_join", sf_ticket_granted(t));
  Check("sf_clone after sf_join", sf_clone(t));

  // A result larger than the buffer: truncated, result_length is the full length.
  {
    sf_ticket_t t2 = sf_request_ticket(1);
    if (sf_clone(t2) > 0) sf_exit_with(7, "0123456789abcdef", 16);
    char buffer[9] = "########";
    struct sf_outcome o;
    memset(&o, 0, sizeof o);
    o.result = (uint64_t)(uintptr_t)buffer;
    o.result_capacity = 4;
    Check("sf_join(capacity 4)", sf_join(t2, &o, 1));
    printf("truncated: status %d length %llu buffer %s\n", o.status,
           (unsigned long long)o.result_length, buffer);
  }

  // No outcome buffer at all.
  {
    sf_ticket_t t3 = sf_request_ticket(2);
    if (sf_clone(t3) > 0) sf_exit();
    Check("sf_join(NULL, 0)", sf_join(t3, NULL, 0));
  }

  // Fewer slots than clones: the first is filled, the rest of memory untouched.
  {
    sf_ticket_t t4 = sf_request_ticket(3);
    int cid = sf_clone(t4);
    if (cid > 0) sf_exit_with(cid, NULL, 0);
    struct sf_outcome o[2];
    memset(o, 0, sizeof o);
    o[1].id = -7;
    Check("sf_join(max 1) of 3 clones", sf_join(t4, o, 1));
    printf("slot 0: kind %d status == id: %s; slot 1 id: %d\n", o[0].kind,
           o[0].status == o[0].id ? "yes" : "NO", o[1].id);
  }

  // A bad result pointer: EFAULT, and the ticket is released all the same.
  {
    sf_ticket_t t5 = sf_request_ticket(1);
    if (sf_clone(t5) > 0) sf_exit_with(0, "payload!", 8);
    struct sf_outcome o;
    memset(&o, 0, sizeof o);
    o.result = 1;
    o.result_capacity = 8;
    Check("sf_join(result 0x1)", sf_join(t5, &o, 1));
    Check("sf_join after a faulting sf_join", sf_join(t5, &o, 1));
  }

  // The largest blob allowed, exactly SF_MAX_RESULT bytes, arrives intact.
  {
    sf_ticket_t t6 = sf_request_ticket(1);
    if (sf_clone(t6) > 0) {
      for (uint32_t i = 0; i < SF_MAX_RESULT; ++i) g_big[i] = (uint8_t)(i * 31 + 7);
      sf_exit_with(0, g_big, SF_MAX_RESULT);
    }
    uint8_t* buffer = malloc(SF_MAX_RESULT);
    struct sf_outcome o;
    memset(&o, 0, sizeof o);
    o.result = (uint64_t)(uintptr_t)buffer;
    o.result_capacity = SF_MAX_RESULT;
    Check("sf_join(SF_MAX_RESULT blob)", sf_join(t6, &o, 1));
    int intact = o.result_length == SF_MAX_RESULT;
    for (uint32_t i = 0; intact && i < SF_MAX_RESULT; ++i)
      if (buffer[i] != (uint8_t)(i * 31 + 7)) intact = 0;
    Check("SF_MAX_RESULT blob intact", intact);
  }

  printf("done\n");
  return 0;
}
