// fork_memory: memory integrity across sf_clone (run with --mem 1G).
//
// The parent fills 64 MiB with pattern 0, clones 8 times and, the moment sf_clone returns,
// overwrites the buffer with pattern 100 and sets a flag. Each clone busy-waits a little (so
// the parent's writes have happened), then checks every byte is still pattern 0 and the flag
// still 0, writes its own pattern (its ID), busy-waits again (while its siblings write theirs)
// and checks every byte is its own pattern. Its exit status says which check failed (0: none).
// After sf_join the parent checks every byte is still pattern 100.
//
// Output (parent only): "granted 8", one "clone N: exited S" line per clone in join order,
// "parent memory: ok" (or the first bad offset), "done".
#include <flurry/sf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define kBytes (64u << 20)
#define kClones 8

enum {
  kOk = 0,
  kParentWriteVisible = 1,   // the clone saw the parent's post-clone pattern (or garbage)
  kFlagVisible = 2,          // the clone saw the parent's post-clone flag
  kSiblingWriteVisible = 3,  // the clone's own pattern was overwritten
  kBadId = 4,
};

static volatile int g_flag;  // set by the parent right after sf_clone

// The byte at offset i of pattern p: depends on the offset so shifted or swapped pages show.
static inline uint64_t Word(uint64_t word_index, uint64_t p) {
  uint64_t x = word_index * 0x9e3779b97f4a7c15ULL + p * 0xbf58476d1ce4e5b9ULL;
  return x ^ (x >> 29);
}

static void Fill(uint64_t* words, uint64_t p) {
  for (uint64_t i = 0; i < kBytes / 8; ++i) words[i] = Word(i, p);
}

// Returns the offset of the first byte that differs from pattern p, or -1.
static int64_t Verify(const uint64_t* words, uint64_t p) {
  for (uint64_t i = 0; i < kBytes / 8; ++i) {
    uint64_t expected = Word(i, p);
    if (words[i] != expected) {
      const uint8_t* got = (const uint8_t*)&words[i];
      const uint8_t* want = (const uint8_t*)&expected;
      for (int b = 0; b < 8; ++b)
        if (got[b] != want[b]) return (int64_t)(i * 8 + b);
    }
  }
  return -1;
}

static void BusyWaitMs(long ms) {
  struct timespec start, now;
  clock_gettime(CLOCK_MONOTONIC, &start);
  do {
    clock_gettime(CLOCK_MONOTONIC, &now);
  } while ((now.tv_sec - start.tv_sec) * 1000 + (now.tv_nsec - start.tv_nsec) / 1000000 < ms);
}

int main(void) {
  uint64_t* words = malloc(kBytes);
  if (words == NULL) {
    printf("malloc failed\n");
    return 1;
  }
  Fill(words, 0);
  sf_ticket_t t = sf_request_ticket(kClones);
  if (t < 0) {
    printf("sf_request_ticket: %lld\n", (long long)t);
    return 1;
  }
  printf("granted %d\n", sf_ticket_granted(t));
  int id = sf_clone(t);
  if (id == 0) {
    // Parent: write at once, racing the clones' first checks.
    g_flag = 1;
    Fill(words, 100);
  } else if (id > 0) {
    if (sf_id() != id) sf_exit_with(kBadId, NULL, 0);
    BusyWaitMs(100);
    if (Verify(words, 0) >= 0) sf_exit_with(kParentWriteVisible, NULL, 0);
    if (g_flag != 0) sf_exit_with(kFlagVisible, NULL, 0);
    Fill(words, (uint64_t)id);
    BusyWaitMs(100);
    if (Verify(words, (uint64_t)id) >= 0) sf_exit_with(kSiblingWriteVisible, NULL, 0);
    sf_exit_with(kOk, NULL, 0);
    return 99;  // not reached
  } else {
    printf("sf_clone: %d\n", id);
    return 1;
  }
  struct sf_outcome out[kClones];
  memset(out, 0, sizeof out);
  int n = sf_join(t, out, kClones);
  if (n < 0) {
    printf("sf_join: %d\n", n);
    return 1;
  }
  for (int i = 0; i < n; ++i) {
    if (out[i].kind == SF_OUTCOME_EXITED)
      printf("clone %d: exited %d\n", out[i].id, out[i].status);
    else
      printf("clone %d: kind %d signal %d\n", out[i].id, out[i].kind, out[i].signal);
  }
  int64_t bad = Verify(words, 100);
  if (bad < 0)
    printf("parent memory: ok\n");
  else
    printf("parent memory: differs at offset %lld\n", (long long)bad);
  printf("done\n");
  return 0;
}
