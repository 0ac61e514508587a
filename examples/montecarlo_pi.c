// montecarlo_pi: estimate pi by throwing darts, split across VM clones with the flurry SDK.
//
// usage: montecarlo_pi [CLONES [TRIALS [DARTS]]]   (defaults: 4 clones, 1048576 trials, 64 darts)
//
// The program generates its data set: one 64-bit seed per trial. A trial throws DARTS darts at
// the unit square, each from the seed's xorshift64 stream, and counts those inside the quarter
// circle (integer arithmetic, so every run and every split gives the same count). It then asks
// flurry for CLONES copies of the VM (sf_request_ticket + sf_clone): each clone inherits the
// seeds, takes one contiguous slice of the trials and returns its count with sf_exit_with. The
// parent collects the counts with sf_join, adds them up, computes the same thing serially and
// checks that both agree exactly.
//
// Build: gcc -O2 -static montecarlo_pi.c -lflurry_sf; run: flurry run montecarlo_pi 4
// Outside flurry the SDK calls return -ENOSYS and the program computes serially only.
#include <errno.h>
#include <flurry/sf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>

// One clone's answer.
struct Partial {
  uint64_t first_trial;
  uint64_t trials;
  uint64_t inside;
  double milliseconds;  // the clone's compute time
};

static uint64_t* g_seeds;
static uint64_t g_trials;
static int g_darts;

static double NowMs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ULL;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
  return x ^ (x >> 31);
}

static inline uint64_t XorShift64(uint64_t* s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

// Darts inside the quarter circle of radius 2^31 for trials [first, first + count).
static uint64_t CountInside(uint64_t first, uint64_t count) {
  uint64_t inside = 0;
  for (uint64_t t = first; t < first + count; ++t) {
    uint64_t s = g_seeds[t];
    for (int d = 0; d < g_darts; ++d) {
      uint64_t x = XorShift64(&s) >> 33, y = XorShift64(&s) >> 33;  // 31-bit coordinates
      inside += x * x + y * y < (1ULL << 62);
    }
  }
  return inside;
}

int main(int argc, char** argv) {
  const int clones = argc > 1 ? atoi(argv[1]) : 4;
  g_trials = argc > 2 ? strtoull(argv[2], NULL, 10) : 1048576;
  g_darts = argc > 3 ? atoi(argv[3]) : 64;
  if (clones < 1 || g_trials < 1 || g_darts < 1) {
    fprintf(stderr, "usage: montecarlo_pi [CLONES [TRIALS [DARTS]]]\n");
    return 2;
  }
  const uint64_t darts = g_trials * (uint64_t)g_darts;
  printf("montecarlo_pi: %llu trials x %d darts, %d clones\n", (unsigned long long)g_trials,
         g_darts, clones);

  // The data set, generated once; every clone gets it with the VM's memory.
  double start = NowMs();
  g_seeds = malloc(g_trials * sizeof *g_seeds);
  if (g_seeds == NULL) {
    fprintf(stderr, "montecarlo_pi: out of memory\n");
    return 1;
  }
  for (uint64_t t = 0; t < g_trials; ++t) g_seeds[t] = SplitMix64(t) | 1;  // xorshift: not 0
  printf("generated %llu seeds in %.1f ms\n", (unsigned long long)g_trials, NowMs() - start);

  // Parallel: one slice per clone.
  uint64_t parallel_inside = 0;
  double parallel_ms = 0;
  int have_parallel = 0;
  start = NowMs();
  sf_ticket_t ticket = sf_request_ticket(clones);
  if (ticket == -ENOSYS) {
    printf("not running inside flurry (sf_request_ticket: ENOSYS): serial only\n");
  } else if (ticket < 0) {
    printf("sf_request_ticket: %s\n", strerror((int)-ticket));
    return 1;
  } else {
    const int granted = sf_ticket_granted(ticket);
    const int id = sf_clone(ticket);
    if (id < 0) {
      printf("sf_clone: %s\n", strerror(-id));
      return 1;
    }
    if (id > 0) {
      // A clone: IDs of this ticket are 1..granted. Take slice id - 1 and hand back the count.
      const uint64_t per = g_trials / (uint64_t)granted;
      struct Partial p;
      p.first_trial = (uint64_t)(id - 1) * per;
      p.trials = id == granted ? g_trials - p.first_trial : per;
      struct utsname host;  // where this clone runs: a cluster host's name, or "flurry"
      uname(&host);
      printf("counting trials [%llu, %llu) on %s\n", (unsigned long long)p.first_trial,
             (unsigned long long)(p.first_trial + p.trials),
             host.nodename);  // flurry prefixes "[clone N] "
      double t0 = NowMs();
      p.inside = CountInside(p.first_trial, p.trials);
      p.milliseconds = NowMs() - t0;
      sf_exit_with(0, &p, sizeof p);
      return 1;  // not reached
    }
    struct sf_outcome* outcomes = calloc((size_t)granted, sizeof *outcomes);
    struct Partial* partials = calloc((size_t)granted, sizeof *partials);
    for (int i = 0; i < granted; ++i) {
      outcomes[i].result = (uint64_t)(uintptr_t)&partials[i];
      outcomes[i].result_capacity = sizeof partials[i];
    }
    const int n = sf_join(ticket, outcomes, granted);
    parallel_ms = NowMs() - start;
    if (n != granted) {
      printf("sf_join: %d\n", n);
      return 1;
    }
    for (int i = 0; i < n; ++i) {
      const struct Partial* p = &partials[i];
      if (outcomes[i].kind != SF_OUTCOME_EXITED || outcomes[i].result_length != sizeof *p) {
        printf("clone %d failed (kind %d, status %d, signal %d)\n", outcomes[i].id,
               outcomes[i].kind, outcomes[i].status, outcomes[i].signal);
        return 1;
      }
      printf("clone %d: trials [%llu, %llu): %llu darts inside, %.1f ms\n", outcomes[i].id,
             (unsigned long long)p->first_trial, (unsigned long long)(p->first_trial + p->trials),
             (unsigned long long)p->inside, p->milliseconds);
      parallel_inside += p->inside;
    }
    have_parallel = 1;
    printf("parallel: %d clones, %.1f ms (sf_clone + compute + sf_join)\n", n, parallel_ms);
  }

  // Serial, for comparison and verification.
  start = NowMs();
  const uint64_t serial_inside = CountInside(0, g_trials);
  const double serial_ms = NowMs() - start;
  printf("serial: %.1f ms\n", serial_ms);

  const uint64_t inside = have_parallel ? parallel_inside : serial_inside;
  printf("inside: %llu of %llu darts, pi ~ %.6f\n", (unsigned long long)inside,
         (unsigned long long)darts, 4.0 * (double)inside / (double)darts);
  if (!have_parallel) return 0;
  if (parallel_inside != serial_inside) {
    printf("MISMATCH: clones counted %llu, serial %llu\n", (unsigned long long)parallel_inside,
           (unsigned long long)serial_inside);
    return 1;
  }
  printf("verified: the clones' combined result equals the serial computation (speedup %.2fx)\n",
         serial_ms / parallel_ms);
  return 0;
}
