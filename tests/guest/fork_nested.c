// fork_nested: clones that clone. The original VM clones 2; clone 1 clones 2 (grandchildren);
// each grandchild clones 1 (great-grandchildren). Every clone prints "hello from clone ID",
// checks that it started from its own parent's memory (a buffer and a marker its parent wrote
// just before cloning), and returns a blob to its parent: its ID, the IDs of itself and all its
// descendants, and the sum of ID*ID over them. A parent checks its children's outcomes and
// blobs, and returns the aggregate. The original VM prints:
//   clone ID: exited STATUS, reports ID, subtree N ids     (per child, in join order)
//   ids: 0 I1 I2 ...                                        (sorted, all IDs in the family)
//   distinct: yes | distinct: NO
//   sum: match | sum: MISMATCH
//   errors: N
// Exit status of a clone: 0, or the number of failed checks (blob still sent).
#include <flurry/sf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define kMaxIds 32
#define kBufferBytes (4u << 20)

struct Aggregate {
  int32_t self;
  int32_t count;
  int32_t ids[kMaxIds];
  int64_t sum;
};

static int32_t g_cloner_id = -1;  // the ID of the VM that last called sf_clone (its own write)
static uint8_t* g_buffer;

static void FillBuffer(int32_t value) {
  memset(g_buffer, (int)(value & 0xff) ^ 0x5a, kBufferBytes);
}
static int BufferIs(int32_t value) {
  const uint8_t want = (uint8_t)((value & 0xff) ^ 0x5a);
  for (uint32_t i = 0; i < kBufferBytes; ++i)
    if (g_buffer[i] != want) return 0;
  return 1;
}

// Clones `fanout` children, joins them and folds their blobs into *agg. Returns the number of
// failed checks; in a child, never returns (the child runs Body at depth + 1).
static int CloneAndJoin(int depth, int fanout, struct Aggregate* agg);

// The life of a clone at `depth` (1: child of the original VM).
static void Body(int depth, int32_t expected_cloner) {
  struct Aggregate agg;
  memset(&agg, 0, sizeof agg);
  int errors = 0;
  agg.self = sf_id();
  agg.count = 1;
  agg.ids[0] = agg.self;
  agg.sum = (int64_t)agg.self * agg.self;
  printf("hello from clone %d\n", agg.self);
  if (g_cloner_id != expected_cloner) ++errors;
  if (!BufferIs(expected_cloner)) ++errors;
  int fanout = 0;
  if (depth == 1 && agg.self == 1) fanout = 2;  // clone 1 has grandchildren
  if (depth == 2) fanout = 1;                   // each grandchild has one child
  if (fanout > 0) errors += CloneAndJoin(depth, fanout, &agg);
  sf_exit_with(errors, &agg, sizeof agg);
  exit(100);  // not reached
}

static int CloneAndJoin(int depth, int fanout, struct Aggregate* agg) {
  int errors = 0;
  sf_ticket_t t = sf_request_ticket(fanout);
  if (t < 0 || sf_ticket_granted(t) != fanout) return 1;
  const int32_t self = sf_id();
  g_cloner_id = self;
  FillBuffer(self);
  int id = sf_clone(t);
  if (id < 0) return 1;
  if (id > 0) Body(depth + 1, self);  // never returns
  // Writes after the clone must not reach the children.
  g_cloner_id = -2;
  FillBuffer(-2);

  struct sf_outcome out[4];
  struct Aggregate blobs[4];
  memset(out, 0, sizeof out);
  memset(blobs, 0, sizeof blobs);
  for (int i = 0; i < fanout; ++i) {
    out[i].result = (uint64_t)(uintptr_t)&blobs[i];
    out[i].result_capacity = sizeof blobs[i];
  }
  int n = sf_join(t, out, 4);
  if (n != fanout) return errors + 1;
  for (int i = 0; i < n; ++i) {
    if (depth == 0)
      printf("clone %d: exited %d, reports %d, subtree %d ids\n", out[i].id, out[i].status,
             blobs[i].self, blobs[i].count);
    if (out[i].kind != SF_OUTCOME_EXITED || out[i].status != 0) ++errors;
    if (out[i].result_length != sizeof(struct Aggregate) || blobs[i].self != out[i].id) {
      ++errors;
      continue;
    }
    for (int k = 0; k < blobs[i].count && agg->count < kMaxIds; ++k)
      agg->ids[agg->count++] = blobs[i].ids[k];
    agg->sum += blobs[i].sum;
  }
  return errors;
}

static int CompareInt32(const void* a, const void* b) {
  int32_t x = *(const int32_t*)a, y = *(const int32_t*)b;
  return (x > y) - (x < y);
}

int main(void) {
  g_buffer = malloc(kBufferBytes);
  struct Aggregate all;
  memset(&all, 0, sizeof all);
  all.self = sf_id();
  all.count = 1;
  all.ids[0] = all.self;
  int errors = CloneAndJoin(0, 2, &all);
  qsort(all.ids, (size_t)all.count, sizeof all.ids[0], CompareInt32);
  printf("ids:");
  int distinct = 1;
  int64_t expected_sum = 0;
  for (int i = 0; i < all.count; ++i) {
    printf(" %d", all.ids[i]);
    if (i > 0 && all.ids[i] == all.ids[i - 1]) distinct = 0;
    expected_sum += (int64_t)all.ids[i] * all.ids[i];
  }
  printf("\n");
  printf("distinct: %s\n", distinct ? "yes" : "NO");
  printf("sum: %s\n", all.sum == expected_sum ? "match" : "MISMATCH");
  printf("errors: %d\n", errors);
  return errors == 0 && distinct ? 0 : 1;
}
