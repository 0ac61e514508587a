// cluster_where: where clones run, what they read, how they end — for clones on other hosts.
//
// usage: cluster_where CLONES [SLEEP_MS [MIB [NESTED [LATE [START_MS]]]]]
//   The parent fills MIB MiB (default 4) with a pattern and sums it, asks for CLONES clones and
//   prints "granted M". Each clone sums the same memory (fetching it from the parent's host),
//   prints "on NODENAME sum=S" and "work_ms=T" (the time the sum took), sleeps SLEEP_MS (default
//   0), optionally (NESTED = 1) clones one clone of its own and joins it, and ends with
//   sf_exit_with(id, "NODENAME S"). Each clone also prints "identity pid=P ppid=Q since_us=U":
//   its getpid(), getppid() and how far its CLOCK_MONOTONIC is past the parent's reading just
//   before sf_clone. The parent joins and prints one line per outcome:
//     "outcome id=I kind=K status=S signal=G result=R"
//   then "parent identity pid=P ppid=Q since_us=U" (U: after the join) and
//   "parent on NODENAME sum=S join_ms=T", and exits 0.
//   LATE = 1: each clone prints "waiting on NODENAME" and sleeps before it reads the memory.
//   START_MS > 0: no clone reads the memory before START_MS after the parent's sf_clone (the
//   clones' clock goes on from the parent's), so that clones started at different times read
//   it together; each clone prints "start on time" or, when it got there after START_MS (on a
//   slow host), "start late".
#include <flurry/sf.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/utsname.h>
#include <time.h>
#include <unistd.h>

static double NowMs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static struct timespec g_before_clone;

// Microseconds of CLOCK_MONOTONIC since the parent's reading just before sf_clone.
static long long SinceCloneUs(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (ts.tv_sec - g_before_clone.tv_sec) * 1000000LL +
         (ts.tv_nsec - g_before_clone.tv_nsec) / 1000;
}

static uint64_t Sum(const uint64_t* data, size_t words) {
  uint64_t sum = 0;
  for (size_t i = 0; i < words; ++i) sum = sum * 31 + data[i];
  return sum;
}

int main(int argc, char** argv) {
  const int clones = argc > 1 ? atoi(argv[1]) : 2;
  const int sleep_ms = argc > 2 ? atoi(argv[2]) : 0;
  const size_t mib = argc > 3 ? (size_t)atoi(argv[3]) : 4;
  const int nested = argc > 4 ? atoi(argv[4]) : 0;
  const int late = argc > 5 ? atoi(argv[5]) : 0;
  const int start_ms = argc > 6 ? atoi(argv[6]) : 0;
  const size_t words = mib * (1 << 20) / sizeof(uint64_t);
  uint64_t* data = malloc(words * sizeof(uint64_t) + 8);
  if (data == NULL) return 2;
  for (size_t i = 0; i < words; ++i) data[i] = i * 0x9e3779b97f4a7c15ULL;
  const uint64_t expected = Sum(data, words);
  struct utsname where;
  uname(&where);

  sf_ticket_t ticket = sf_request_ticket(clones);
  if (ticket < 0) {
    printf("sf_request_ticket failed\n");
    return 3;
  }
  printf("granted %d\n", sf_ticket_granted(ticket));
  fflush(stdout);
  clock_gettime(CLOCK_MONOTONIC, &g_before_clone);
  const int id = sf_clone(ticket);
  if (id < 0) {
    printf("sf_clone failed\n");
    return 4;
  }
  if (id > 0) {
    uname(&where);
    struct timespec pause = {sleep_ms / 1000, (long)(sleep_ms % 1000) * 1000000L};
    if (late) {
      printf("waiting on %s\n", where.nodename);
      fflush(stdout);
      nanosleep(&pause, NULL);
    }
    if (start_ms > 0) {
      struct timespec start = g_before_clone;
      start.tv_sec += start_ms / 1000;
      start.tv_nsec += (long)(start_ms % 1000) * 1000000L;
      if (start.tv_nsec >= 1000000000L) {
        start.tv_sec += 1;
        start.tv_nsec -= 1000000000L;
      }
      struct timespec now;
      clock_gettime(CLOCK_MONOTONIC, &now);
      const int late_start =
          now.tv_sec > start.tv_sec || (now.tv_sec == start.tv_sec && now.tv_nsec >= start.tv_nsec);
      printf("start %s\n", late_start ? "late" : "on time");
      fflush(stdout);
      while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &start, NULL) != 0) {
      }
    }
    const double work_start = NowMs();
    const uint64_t sum = Sum(data, words);
    const double work_ms = NowMs() - work_start;
    printf("on %s sum=%llu\n", where.nodename, (unsigned long long)sum);
    printf("work_ms=%.1f\n", work_ms);
    printf("identity pid=%d ppid=%d since_us=%lld\n", (int)getpid(), (int)getppid(),
           SinceCloneUs());
    fflush(stdout);
    if (!late && sleep_ms > 0) nanosleep(&pause, NULL);
    if (nested) {
      sf_ticket_t mine = sf_request_ticket(1);
      if (mine >= 0) {
        const int child = sf_clone(mine);
        if (child > 0) {
          printf("nested clone %d of %d on %s\n", child, id, where.nodename);
          sf_exit_with(0, where.nodename, strlen(where.nodename));
        }
        static char nested_result[128];
        struct sf_outcome out[1];
        memset(out, 0, sizeof out);
        out[0].result = (uint64_t)(uintptr_t)nested_result;
        out[0].result_capacity = sizeof nested_result;
        if (sf_join(mine, out, 1) == 1) {
          printf("nested outcome id=%d kind=%d result=%.*s\n", out[0].id, out[0].kind,
                 (int)out[0].result_length, nested_result);
        }
      }
    }
    char result[128];
    snprintf(result, sizeof result, "%s %llu", where.nodename, (unsigned long long)sum);
    sf_exit_with(sum == expected ? 0 : 1, result, strlen(result));
  }
  const double start = NowMs();
  static char results[64][128];
  struct sf_outcome outcomes[64];
  memset(outcomes, 0, sizeof outcomes);
  for (int i = 0; i < 64; ++i) {
    outcomes[i].result = (uint64_t)(uintptr_t)results[i];
    outcomes[i].result_capacity = sizeof results[i];
  }
  const int n = sf_join(ticket, outcomes, 64);
  const double join_ms = NowMs() - start;
  for (int i = 0; i < n; ++i) {
    printf("outcome id=%d kind=%d status=%d signal=%d result=%.*s\n", outcomes[i].id,
           outcomes[i].kind, outcomes[i].status, outcomes[i].signal, (int)outcomes[i].result_length,
           results[i]);
  }
  printf("parent identity pid=%d ppid=%d since_us=%lld\n", (int)getpid(), (int)getppid(),
         SinceCloneUs());
  printf("parent on %s sum=%llu join_ms=%.0f\n", where.nodename, (unsigned long long)expected,
         join_ms);
  return 0;
}
