// fork_slices: clones compute slices of a data set and return them through sf_join.
//
// usage: fork_slices [CLONES [ELEMENTS]]   (defaults: 4 clones, 524288 elements)
//
// The parent generates ELEMENTS 32-bit values with an LCG (x = x * 6364136223846793005 +
// 1442695040888963407, value = x >> 32, seed 42), clones, and each clone i (1..m) takes slice
// i-1 of m (contiguous, the last one takes the remainder). A clone returns a blob: a header
// {id, first, count, sum, xor, min, max} followed by every element of its slice transformed by
// F(v) = v * 2654435761 + id0 (u32 arithmetic, id0 = slice index), a large blob (512 KiB with
// the defaults). The parent joins with buffers big enough for every blob, puts the pieces
// together and compares them, field by field and element by element, with the same computation
// done serially. Output:
//   granted M
//   clone ID: slice S first F count C length L          (per clone, in join order)
//   sum SUM xor XOR min MIN max MAX                     (combined from the clones)
//   serial: sum SUM xor XOR min MIN max MAX
//   transformed: match | transformed: mismatch at I
//   result: match | result: MISMATCH
#include <flurry/sf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct Header {
  int64_t id;
  uint64_t first;
  uint64_t count;
  uint64_t sum;
  uint32_t xor_all;
  uint32_t min;
  uint32_t max;
  uint32_t pad;
};

struct Stats {
  uint64_t sum;
  uint32_t xor_all, min, max;
};

static uint32_t* g_data;
static uint64_t g_elements;

static void Generate(void) {
  uint64_t x = 42;
  for (uint64_t i = 0; i < g_elements; ++i) {
    x = x * 6364136223846793005ULL + 1442695040888963407ULL;
    g_data[i] = (uint32_t)(x >> 32);
  }
}

static inline uint32_t F(uint32_t v, uint32_t slice) { return v * 2654435761u + slice; }

static struct Stats Compute(uint64_t first, uint64_t count) {
  struct Stats s = {0, 0, UINT32_MAX, 0};
  for (uint64_t i = first; i < first + count; ++i) {
    uint32_t v = g_data[i];
    s.sum += v;
    s.xor_all ^= v;
    if (v < s.min) s.min = v;
    if (v > s.max) s.max = v;
  }
  return s;
}

static void Slice(uint64_t slice, uint64_t slices, uint64_t* first, uint64_t* count) {
  uint64_t per = g_elements / slices;
  *first = slice * per;
  *count = slice == slices - 1 ? g_elements - *first : per;
}

int main(int argc, char** argv) {
  int clones = argc > 1 ? atoi(argv[1]) : 4;
  g_elements = argc > 2 ? strtoull(argv[2], NULL, 10) : 524288;
  g_data = malloc(g_elements * sizeof *g_data);
  if (g_data == NULL) return 1;
  Generate();

  sf_ticket_t t = sf_request_ticket(clones);
  if (t < 0) {
    printf("sf_request_ticket: %lld\n", (long long)t);
    return 1;
  }
  const int m = sf_ticket_granted(t);
  printf("granted %d\n", m);
  const uint64_t max_slice = g_elements / m + g_elements % m;
  const size_t max_blob = sizeof(struct Header) + max_slice * sizeof(uint32_t);

  const int id = sf_clone(t);
  if (id < 0) {
    printf("sf_clone: %d\n", id);
    return 1;
  }
  if (id > 0) {
    // Clone: the first ticket of the original VM gives IDs 1..m, so ID i takes slice i-1.
    const uint64_t slice = (uint64_t)(id - 1);
    uint64_t first, count;
    Slice(slice, (uint64_t)m, &first, &count);
    size_t blob_size = sizeof(struct Header) + count * sizeof(uint32_t);
    uint8_t* blob = malloc(blob_size);
    struct Stats s = Compute(first, count);
    struct Header h = {id, first, count, s.sum, s.xor_all, s.min, s.max, 0};
    memcpy(blob, &h, sizeof h);
    uint32_t* transformed = (uint32_t*)(blob + sizeof h);
    for (uint64_t i = 0; i < count; ++i) transformed[i] = F(g_data[first + i], (uint32_t)slice);
    int r = sf_exit_with(0, blob, blob_size);
    printf("sf_exit_with returned %d\n", r);
    return 2;
  }

  struct sf_outcome* out = calloc((size_t)m, sizeof *out);
  uint8_t** blobs = calloc((size_t)m, sizeof *blobs);
  for (int i = 0; i < m; ++i) {
    blobs[i] = malloc(max_blob);
    out[i].result = (uint64_t)(uintptr_t)blobs[i];
    out[i].result_capacity = max_blob;
  }
  int n = sf_join(t, out, m);
  if (n != m) {
    printf("sf_join: %d\n", n);
    return 1;
  }

  uint32_t* combined_transformed = malloc(g_elements * sizeof(uint32_t));
  memset(combined_transformed, 0, g_elements * sizeof(uint32_t));
  struct Stats combined = {0, 0, UINT32_MAX, 0};
  int ok = 1;
  for (int i = 0; i < n; ++i) {
    struct Header h;
    memset(&h, 0, sizeof h);
    if (out[i].kind != SF_OUTCOME_EXITED || out[i].status != 0 || out[i].result_length < sizeof h) {
      printf("clone %d: kind %d status %d signal %d length %llu\n", out[i].id, out[i].kind,
             out[i].status, out[i].signal, (unsigned long long)out[i].result_length);
      ok = 0;
      continue;
    }
    memcpy(&h, blobs[i], sizeof h);
    const uint64_t slice = (uint64_t)(h.id - 1);
    printf("clone %d: slice %llu first %llu count %llu length %llu\n", out[i].id,
           (unsigned long long)slice, (unsigned long long)h.first, (unsigned long long)h.count,
           (unsigned long long)out[i].result_length);
    if (h.id != out[i].id || out[i].result_length != sizeof h + h.count * sizeof(uint32_t) ||
        h.first + h.count > g_elements) {
      printf("clone %d: inconsistent header\n", out[i].id);
      ok = 0;
      continue;
    }
    combined.sum += h.sum;
    combined.xor_all ^= h.xor_all;
    if (h.min < combined.min) combined.min = h.min;
    if (h.max > combined.max) combined.max = h.max;
    memcpy(combined_transformed + h.first, blobs[i] + sizeof h, h.count * sizeof(uint32_t));
  }
  printf("sum %llu xor %u min %u max %u\n", (unsigned long long)combined.sum, combined.xor_all,
         combined.min, combined.max);

  struct Stats serial = Compute(0, g_elements);
  printf("serial: sum %llu xor %u min %u max %u\n", (unsigned long long)serial.sum, serial.xor_all,
         serial.min, serial.max);
  if (serial.sum != combined.sum || serial.xor_all != combined.xor_all ||
      serial.min != combined.min || serial.max != combined.max)
    ok = 0;
  int64_t bad = -1;
  for (int s = 0; s < m && bad < 0; ++s) {
    uint64_t first, count;
    Slice((uint64_t)s, (uint64_t)m, &first, &count);
    for (uint64_t i = first; i < first + count; ++i) {
      if (combined_transformed[i] != F(g_data[i], (uint32_t)s)) {
        bad = (int64_t)i;
        break;
      }
    }
  }
  if (bad < 0) {
    printf("transformed: match\n");
  } else {
    printf("transformed: mismatch at %lld\n", (long long)bad);
    ok = 0;
  }
  printf("result: %s\n", ok ? "match" : "MISMATCH");
  return ok ? 0 : 1;
}
