// fork_checkpoint: sf_checkpoint_parent + sf_create_clones after the parent changed memory.
//
// The parent sets x = 1 (and fills an 8 MiB buffer with 1s), checkpoints, sets x = 2 (buffer
// 2s), and creates 3 clones from the checkpoint; then sets x = 3 and creates 2 more from the
// same checkpoint. Each clone resumes inside sf_checkpoint_parent (which returns its ID there)
// and returns {ID returned, x, sf_id(), checkpoint handle, buffer-is-all-1s} with exit status x.
// Output (parent only):
//   checkpoint: 0
//   create_clones: 0
//   sf_clone on that ticket: EALREADY
//   create_clones again: EALREADY
//   clone: status 1 x 1 id matches sf_id: yes checkpoint handle: same memory: checkpoint
//   (x3)
//   parent x=2
//   create_clones (round 2): 0
//   clone: ... (x2)
//   parent x=3
//   ids distinct and >= 1: yes (5 ids)
#include <errno.h>
#include <flurry/sf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define kBufferBytes (8u << 20)

struct Report {
  int32_t returned_id;
  int32_t x;
  int32_t sf_id;
  int32_t buffer_ok;
  int64_t checkpoint;
};

static volatile int x;
static uint8_t* g_buffer;

static int BufferIs(uint8_t v) {
  for (uint32_t i = 0; i < kBufferBytes; ++i)
    if (g_buffer[i] != v) return 0;
  return 1;
}

static const char* ErrName(int r) {
  switch (r) {
    case -EINVAL:
      return "EINVAL";
    case -EALREADY:
      return "EALREADY";
    case -EFAULT:
      return "EFAULT";
    case 0:
      return "0";
  }
  return "unexpected";
}

static int g_ids[16];
static int g_id_count;

static int JoinAndPrint(sf_ticket_t t, int expected, sf_checkpoint_t cp) {
  struct sf_outcome out[8];
  struct Report reports[8];
  memset(out, 0, sizeof out);
  memset(reports, 0, sizeof reports);
  for (int i = 0; i < 8; ++i) {
    out[i].result = (uint64_t)(uintptr_t)&reports[i];
    out[i].result_capacity = sizeof reports[i];
  }
  int n = sf_join(t, out, 8);
  if (n != expected) {
    printf("join: %d\n", n);
    return 1;
  }
  for (int i = 0; i < n; ++i) {
    const struct Report* r = &reports[i];
    if (out[i].kind != SF_OUTCOME_EXITED || out[i].result_length != sizeof *r) {
      printf("clone %d: kind %d signal %d length %llu\n", out[i].id, out[i].kind, out[i].signal,
             (unsigned long long)out[i].result_length);
      continue;
    }
    printf("clone: status %d x %d id matches sf_id: %s checkpoint handle: %s memory: %s\n",
           out[i].status, r->x, r->returned_id == out[i].id && r->sf_id == out[i].id ? "yes" : "NO",
           r->checkpoint == cp ? "same" : "DIFFERENT",
           r->buffer_ok ? "checkpoint" : "NOT THE CHECKPOINT'S");
    if (g_id_count < 16) g_ids[g_id_count++] = out[i].id;
  }
  return 0;
}

int main(void) {
  g_buffer = malloc(kBufferBytes);
  x = 1;
  memset(g_buffer, 1, kBufferBytes);
  sf_checkpoint_t cp = 0;
  int r = sf_checkpoint_parent(&cp);
  if (r > 0) {
    struct Report report = {r, x, sf_id(), BufferIs(1), cp};
    sf_exit_with(x, &report, sizeof report);
    return 100;  // not reached
  }
  printf("checkpoint: %s\n", ErrName(r));
  if (r < 0) return 1;

  x = 2;
  memset(g_buffer, 2, kBufferBytes);
  sf_ticket_t t = sf_request_ticket(3);
  printf("create_clones: %s\n", ErrName(sf_create_clones(cp, t)));
  printf("sf_clone on that ticket: %s\n", ErrName(sf_clone(t)));
  printf("create_clones again: %s\n", ErrName(sf_create_clones(cp, t)));
  if (JoinAndPrint(t, 3, cp) != 0) return 1;
  printf("parent x=%d\n", x);

  x = 3;
  memset(g_buffer, 3, kBufferBytes);
  sf_ticket_t t2 = sf_request_ticket(2);
  printf("create_clones (round 2): %s\n", ErrName(sf_create_clones(cp, t2)));
  if (JoinAndPrint(t2, 2, cp) != 0) return 1;
  printf("parent x=%d\n", x);

  int ok = 1;
  for (int i = 0; i < g_id_count; ++i) {
    if (g_ids[i] < 1) ok = 0;
    for (int j = 0; j < i; ++j)
      if (g_ids[i] == g_ids[j]) ok = 0;
  }
  printf("ids distinct and >= 1: %s (%d ids)\n", ok ? "yes" : "NO", g_id_count);
  return 0;
}
