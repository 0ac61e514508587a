// Times threads from inside the program: pthread_create + pthread_join of a thread that returns
// at once; a futex ping-pong between two threads (each round: one FUTEX_WAKE and one
// FUTEX_WAIT per side, with a thread switch); and a compute job split over 4 threads (or
// argv[4]) against the same work done by one thread (parallel_ratio = serial time / parallel
// time: above 1 only when the threads run in parallel).
#define _GNU_SOURCE
#include <linux/futex.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void* Nothing(void* arg) { return arg; }

static atomic_uint turn;  // whose turn: 0 or 1
static int rounds;

static void FutexWait(atomic_uint* word, unsigned value) {
  syscall(SYS_futex, word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}
static void FutexWake(atomic_uint* word) {
  syscall(SYS_futex, word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static void* PingPong(void* arg) {
  const unsigned me = (unsigned)(uintptr_t)arg;
  for (int i = 0; i < rounds; ++i) {
    unsigned now;
    while ((now = atomic_load(&turn)) != me) FutexWait(&turn, now);
    atomic_store(&turn, 1 - me);
    FutexWake(&turn);
  }
  return NULL;
}

static volatile uint64_t sink;
static void* Compute(void* arg) {
  const uint64_t n = (uint64_t)(uintptr_t)arg;
  uint64_t x = 88172645463325252ULL;
  for (uint64_t i = 0; i < n; ++i) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
  }
  sink += x;
  return NULL;
}

int main(int argc, char** argv) {
  const int creates = argc > 1 ? atoi(argv[1]) : 2000;
  rounds = argc > 2 ? atoi(argv[2]) : 20000;
  const uint64_t work = argc > 3 ? strtoull(argv[3], NULL, 10) : 400000000ULL;
  int workers_n = argc > 4 ? atoi(argv[4]) : 4;
  if (workers_n < 1 || workers_n > 16) workers_n = 4;

  double start = now_ns();
  for (int i = 0; i < creates; ++i) {
    pthread_t t;
    if (pthread_create(&t, NULL, Nothing, NULL) != 0 || pthread_join(t, NULL) != 0) return 1;
  }
  const double create_ns = (now_ns() - start) / creates;

  pthread_t a, b;
  start = now_ns();
  pthread_create(&a, NULL, PingPong, (void*)0);
  pthread_create(&b, NULL, PingPong, (void*)1);
  pthread_join(a, NULL);
  pthread_join(b, NULL);
  const double pingpong_ns = (now_ns() - start) / rounds;

  start = now_ns();
  Compute((void*)(uintptr_t)work);
  const double serial_ns = now_ns() - start;
  pthread_t workers[16];
  start = now_ns();
  for (int i = 0; i < workers_n; ++i)
    pthread_create(&workers[i], NULL, Compute, (void*)(uintptr_t)(work / workers_n));
  for (int i = 0; i < workers_n; ++i) pthread_join(workers[i], NULL);
  const double parallel_ns = now_ns() - start;

  printf(
      "create_join_ns=%.1f\npingpong_round_ns=%.1f\nserial_compute_ns=%.0f\n"
      "compute_threads=%d\nparallel_compute_ns=%.0f\nparallel_ratio=%.3f\n",
      create_ns, pingpong_ns, serial_ns, workers_n, parallel_ns, serial_ns / parallel_ns);
  return 0;
}
