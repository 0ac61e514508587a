// threads: POSIX threads as programs use them, one scenario per run (argv[1]). The output is
// deterministic (printed by one thread, after the others are joined or in a forced order),
// so tests/integration/threads_test.cc compares it byte for byte with a native run.
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "guest_check.h"

// ---- reduce: a parallel sum over a shared array ----------------------------------------------
enum { kValues = 1 << 20, kWorkers = 4 };
static uint32_t values[kValues];
struct Slice {
  int index;
  uint64_t sum;
};
static void* SumSlice(void* arg) {
  struct Slice* slice = arg;
  const int per = kValues / kWorkers;
  for (int i = slice->index * per; i < (slice->index + 1) * per; ++i) slice->sum += values[i];
  return (void*)(intptr_t)(slice->index + 100);
}
static int Reduce(void) {
  for (int i = 0; i < kValues; ++i) values[i] = (uint32_t)(i * 2654435761u) >> 12;
  pthread_t threads[kWorkers];
  struct Slice slices[kWorkers];
  for (int i = 0; i < kWorkers; ++i) {
    slices[i] = (struct Slice){i, 0};
    StartThread(&threads[i], SumSlice, &slices[i]);
  }
  uint64_t total = 0;
  for (int i = 0; i < kWorkers; ++i) {
    void* result;
    CHECK(pthread_join(threads[i], &result) == 0);
    printf("slice %d: sum %llu, returned %ld\n", i, (unsigned long long)slices[i].sum,
           (long)(intptr_t)result);
    total += slices[i].sum;
  }
  uint64_t serial = 0;
  for (int i = 0; i < kValues; ++i) serial += values[i];
  printf("total %llu, serial %llu\n", (unsigned long long)total, (unsigned long long)serial);
  return 0;
}

// ---- queue: producers and consumers on a mutex and two condition variables -----------------
enum { kItems = 2000, kCapacity = 8, kConsumers = 3 };
static pthread_mutex_t queue_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t not_empty = PTHREAD_COND_INITIALIZER;
static pthread_cond_t not_full = PTHREAD_COND_INITIALIZER;
static int queue[kCapacity], queue_head, queue_count, produced_all;
static void* Consume(void* arg) {
  uint64_t* sum = arg;
  for (;;) {
    pthread_mutex_lock(&queue_lock);
    while (queue_count == 0 && !produced_all) pthread_cond_wait(&not_empty, &queue_lock);
    if (queue_count == 0) {
      pthread_mutex_unlock(&queue_lock);
      return NULL;
    }
    int item = queue[queue_head];
    queue_head = (queue_head + 1) % kCapacity;
    --queue_count;
    pthread_cond_signal(&not_full);
    pthread_mutex_unlock(&queue_lock);
    *sum += (uint64_t)item;
  }
}
static int Queue(void) {
  pthread_t consumers[kConsumers];
  uint64_t sums[kConsumers] = {0};
  for (int i = 0; i < kConsumers; ++i) StartThread(&consumers[i], Consume, &sums[i]);
  for (int item = 1; item <= kItems; ++item) {
    pthread_mutex_lock(&queue_lock);
    while (queue_count == kCapacity) pthread_cond_wait(&not_full, &queue_lock);
    queue[(queue_head + queue_count) % kCapacity] = item;
    ++queue_count;
    pthread_cond_signal(&not_empty);
    pthread_mutex_unlock(&queue_lock);
  }
  pthread_mutex_lock(&queue_lock);
  produced_all = 1;
  pthread_cond_broadcast(&not_empty);
  pthread_mutex_unlock(&queue_lock);
  uint64_t total = 0;
  for (int i = 0; i < kConsumers; ++i) {
    CHECK(pthread_join(consumers[i], NULL) == 0);
    total += sums[i];
  }
  printf("consumed %llu (expected %llu)\n", (unsigned long long)total,
         (unsigned long long)kItems * (kItems + 1) / 2);
  return 0;
}

// ---- tls: thread-local storage, initialised and zeroed per thread ----------------------------
static __thread int tls_counter = 7;
static __thread char tls_name[32];
static void* TlsWorker(void* arg) {
  int index = (int)(intptr_t)arg;
  CHECK(tls_counter == 7 && tls_name[0] == 0);
  snprintf(tls_name, sizeof tls_name, "worker-%d", index);
  for (int i = 0; i < index; ++i) ++tls_counter;
  char* copy = malloc(64);
  snprintf(copy, 64, "%s counted %d", tls_name, tls_counter);
  return copy;
}
static int Tls(void) {
  pthread_t threads[5];
  for (int i = 0; i < 5; ++i) StartThread(&threads[i], TlsWorker, (void*)(intptr_t)i);
  for (int i = 0; i < 5; ++i) {
    char* text;
    CHECK(pthread_join(threads[i], (void**)&text) == 0);
    printf("%s\n", text);
    free(text);
  }
  printf("main: counter %d, name '%s'\n", tls_counter, tls_name);
  return 0;
}

// ---- many: more threads than CPUs, created and joined in waves; an atomic counter ------------
static atomic_int counter;
static void* Increment(void* arg) {
  for (int i = 0; i < 1000; ++i) atomic_fetch_add(&counter, 1);
  return arg;
}
static int Many(void) {
  for (int wave = 0; wave < 4; ++wave) {
    pthread_t threads[32];
    for (int i = 0; i < 32; ++i) StartThread(&threads[i], Increment, NULL);
    for (int i = 0; i < 32; ++i) CHECK(pthread_join(threads[i], NULL) == 0);
  }
  printf("counter %d\n", atomic_load(&counter));
  return 0;
}

// ---- spin: two threads hand a token back and forth by busy-waiting (needs preemption) --------
static atomic_int token;
static void* Spinner(void* arg) {
  int me = (int)(intptr_t)arg;
  for (int round = 0; round < 20; ++round) {
    while (atomic_load(&token) % 2 != me) {
    }
    atomic_fetch_add(&token, 1);
  }
  return NULL;
}
static int Spin(void) {
  pthread_t a, b;
  StartThread(&a, Spinner, (void*)0);
  StartThread(&b, Spinner, (void*)1);
  CHECK(pthread_join(a, NULL) == 0 && pthread_join(b, NULL) == 0);
  printf("token %d\n", atomic_load(&token));
  return 0;
}

// ---- parallel: threads run at the same time, not only in turn (needs two host CPUs) ----------
// A worker counts without a syscall; the main thread looks for the count changing inside a
// window of its own that no preemption interrupted (under 50 us by the vDSO clock, which makes
// no syscall). Threads taking turns on one CPU never show that: the count only moves while
// the main thread is switched out, which makes its window a whole time slice long.
static _Atomic uint64_t parallel_count;
static atomic_int parallel_stop;
static void* CountWithoutSyscalls(void* arg) {
  (void)arg;
  while (!atomic_load_explicit(&parallel_stop, memory_order_relaxed)) {
    atomic_fetch_add_explicit(&parallel_count, 1, memory_order_relaxed);
  }
  return NULL;
}
static int64_t NowNs(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000 + t.tv_nsec;
}
static int Parallel(void) {
  pthread_t worker;
  StartThread(&worker, CountWithoutSyscalls, NULL);
  int overlaps = 0;
  const int64_t give_up = NowNs() + 10 * 1000000000LL;
  while (overlaps < 200 && NowNs() < give_up) {
    const int64_t from = NowNs();
    const uint64_t before = atomic_load_explicit(&parallel_count, memory_order_relaxed);
    for (volatile int spin = 0; spin < 200; ++spin) {
    }
    const uint64_t after = atomic_load_explicit(&parallel_count, memory_order_relaxed);
    if (after != before && NowNs() - from < 50000) ++overlaps;
  }
  atomic_store(&parallel_stop, 1);
  CHECK(pthread_join(worker, NULL) == 0);
  printf("ran in parallel: %s\n", overlaps >= 200 ? "yes" : "no");
  return 0;
}

// ---- kill_spinner: a signal reaches a thread that computes while every other thread computes --
// A sender thread (made first) waits for the target to spin, sends it SIGUSR1 and spins on; the
// main thread spins until the target's handler has run. No thread makes a syscall meanwhile:
// nothing but the signal stops the target. (On three lanes the target runs on the last one.)
static _Atomic int spinner_up, spinner_handled, spinner_stop;
static _Atomic pid_t spinner_tid, handler_tid;
static pthread_t spinner;
static void OnUsr1InSpinner(int sig) {
  (void)sig;
  atomic_store(&handler_tid, (pid_t)syscall(SYS_gettid));
  atomic_store(&spinner_handled, 1);
}
static void* SpinUntilStopped(void* arg) {
  (void)arg;
  atomic_store(&spinner_tid, (pid_t)syscall(SYS_gettid));
  atomic_store(&spinner_up, 1);
  while (!atomic_load_explicit(&spinner_stop, memory_order_relaxed)) {
  }
  return NULL;
}
static void* SendToSpinner(void* arg) {
  (void)arg;
  while (!atomic_load(&spinner_up)) {
  }
  CHECK(pthread_kill(spinner, SIGUSR1) == 0);
  while (!atomic_load_explicit(&spinner_stop, memory_order_relaxed)) {
  }
  return NULL;
}
static int KillSpinner(void) {
  struct sigaction action = {0};
  action.sa_handler = OnUsr1InSpinner;
  sigemptyset(&action.sa_mask);
  CHECK(sigaction(SIGUSR1, &action, NULL) == 0);
  pthread_t sender;
  StartThread(&sender, SendToSpinner, NULL);
  StartThread(&spinner, SpinUntilStopped, NULL);
  const int64_t give_up = NowNs() + 10 * 1000000000LL;
  while (!atomic_load(&spinner_handled) && NowNs() < give_up) {
  }
  printf("handled: %s, in the spinner: %s\n", atomic_load(&spinner_handled) ? "yes" : "no",
         atomic_load(&handler_tid) == atomic_load(&spinner_tid) ? "yes" : "no");
  atomic_store(&spinner_stop, 1);
  CHECK(pthread_join(sender, NULL) == 0 && pthread_join(spinner, NULL) == 0);
  return 0;
}

// ---- timed: timeouts of condition waits, sleeps among threads, semaphores --------------------
static sem_t sem_ready;
static void* Sleeper(void* arg) {
  struct timespec ts = {0, 30 * 1000 * 1000};
  nanosleep(&ts, NULL);
  sem_post(&sem_ready);
  return arg;
}
static int Timed(void) {
  pthread_mutex_t m = PTHREAD_MUTEX_INITIALIZER;
  pthread_cond_t c = PTHREAD_COND_INITIALIZER;
  struct timespec before, deadline, after;
  clock_gettime(CLOCK_REALTIME, &before);
  deadline = before;
  deadline.tv_nsec += 50 * 1000 * 1000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000;
  }
  pthread_t sleeper;
  CHECK(sem_init(&sem_ready, 0, 0) == 0);
  StartThread(&sleeper, Sleeper, NULL);
  pthread_mutex_lock(&m);
  int err = pthread_cond_timedwait(&c, &m, &deadline);
  pthread_mutex_unlock(&m);
  clock_gettime(CLOCK_REALTIME, &after);
  long waited_ms =
      (after.tv_sec - before.tv_sec) * 1000 + (after.tv_nsec - before.tv_nsec) / 1000000;
  printf("timedwait: %s, waited at least 50 ms: %s\n", strerrorname_np(err),
         waited_ms >= 49 ? "yes" : "no");
  CHECK(sem_wait(&sem_ready) == 0);
  CHECK(pthread_join(sleeper, NULL) == 0);
  printf("sleeper posted\n");
  struct timespec soon;
  clock_gettime(CLOCK_REALTIME, &soon);
  soon.tv_nsec += 10 * 1000 * 1000;
  if (soon.tv_nsec >= 1000000000) {
    soon.tv_sec++;
    soon.tv_nsec -= 1000000000;
  }
  printf("sem_timedwait: %s\n",
         sem_timedwait(&sem_ready, &soon) == 0 ? "ok" : strerrorname_np(errno));
  return 0;
}

// ---- cancel: pthread_cancel of a thread blocked in a condition wait, and of a sleeper --------
static pthread_mutex_t cancel_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t never = PTHREAD_COND_INITIALIZER;
static atomic_int cleanups;
static void Cleanup(void* arg) {
  (void)arg;
  atomic_fetch_add(&cleanups, 1);
  pthread_mutex_unlock(&cancel_lock);
}
static void* WaitForever(void* arg) {
  pthread_mutex_lock(&cancel_lock);
  pthread_cleanup_push(Cleanup, NULL);
  for (;;) pthread_cond_wait(&never, &cancel_lock);
  pthread_cleanup_pop(1);
  return arg;
}
static void* SleepForever(void* arg) {
  for (;;) sleep(100);
  return arg;
}
static int Cancel(void) {
  pthread_t waiter, sleeper;
  StartThread(&waiter, WaitForever, NULL);
  StartThread(&sleeper, SleepForever, NULL);
  struct timespec ts = {0, 20 * 1000 * 1000};
  nanosleep(&ts, NULL);
  CHECK(pthread_cancel(waiter) == 0 && pthread_cancel(sleeper) == 0);
  void* r1;
  void* r2;
  CHECK(pthread_join(waiter, &r1) == 0 && pthread_join(sleeper, &r2) == 0);
  printf("waiter %s, sleeper %s, cleanups %d\n", r1 == PTHREAD_CANCELED ? "canceled" : "returned",
         r2 == PTHREAD_CANCELED ? "canceled" : "returned", atomic_load(&cleanups));
  CHECK(pthread_mutex_trylock(&cancel_lock) == 0);
  printf("lock released by the cleanup handler\n");
  return 0;
}

// ---- signals: pthread_kill reaches its thread; a process signal goes to a thread that does
// not block it ---------------------------------------------------------------------------------
static _Atomic pid_t handled_in;
static void OnUsr(int sig) {
  (void)sig;
  atomic_store(&handled_in, (pid_t)syscall(SYS_gettid));
}
static atomic_int stop_worker;
static _Atomic pid_t worker_tid;
static void* SignalWorker(void* arg) {
  atomic_store(&worker_tid, (pid_t)syscall(SYS_gettid));
  while (!atomic_load(&stop_worker)) {
    struct timespec ts = {0, 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return arg;
}
static int Signals(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnUsr;
  sigaction(SIGUSR1, &sa, NULL);
  sigaction(SIGUSR2, &sa, NULL);
  pthread_t worker;
  StartThread(&worker, SignalWorker, NULL);
  while (atomic_load(&worker_tid) == 0) sched_yield();
  CHECK(pthread_kill(worker, SIGUSR1) == 0);
  while (atomic_load(&handled_in) == 0) sched_yield();
  printf("pthread_kill: handled in the worker: %s\n",
         atomic_load(&handled_in) == atomic_load(&worker_tid) ? "yes" : "no");
  // Main blocks SIGUSR2: a SIGUSR2 for the process must be handled by the worker.
  atomic_store(&handled_in, 0);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR2);
  CHECK(pthread_sigmask(SIG_BLOCK, &set, NULL) == 0);
  kill(getpid(), SIGUSR2);
  while (atomic_load(&handled_in) == 0) sched_yield();
  printf("kill: handled in the worker: %s\n",
         atomic_load(&handled_in) == atomic_load(&worker_tid) ? "yes" : "no");
  CHECK(pthread_kill(worker, 0) == 0);
  atomic_store(&stop_worker, 1);
  CHECK(pthread_join(worker, NULL) == 0);
  printf("main's tid is the pid: %s\n", syscall(SYS_gettid) == getpid() ? "yes" : "no");
  return 0;
}

// ---- sigwait: a thread dedicated to signals (sigwait) while the others block them; a thread
// in pause() woken by a handled signal ---------------------------------------------------------
static atomic_int waited_count;
static _Atomic int waited[3];
static void* SigWaiter(void* arg) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  for (int i = 0; i < 2; ++i) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) return (void*)1;
    atomic_store(&waited[i], sig);
    atomic_fetch_add(&waited_count, 1);
  }
  return arg;
}
static atomic_int term_handled;
static void OnTerm(int sig) {
  (void)sig;
  atomic_store(&term_handled, 1);
}
static void* Pauser(void* arg) {
  int r = pause();
  return (void*)(intptr_t)(r == -1 && errno == EINTR ? 1 : 2);
  (void)arg;
}
static void* Suspender(void* arg) {
  static char report[96];
  sigset_t none;
  sigemptyset(&none);
  const pid_t me = (pid_t)syscall(SYS_gettid);
  int r = sigsuspend(&none);
  sigset_t now;
  pthread_sigmask(SIG_BLOCK, NULL, &now);
  snprintf(report, sizeof report, "%s, handler ran in it: %s, SIGUSR1 blocked again: %s",
           r == -1 && errno == EINTR ? "EINTR" : "other",
           atomic_load(&handled_in) == me ? "yes" : "no",
           sigismember(&now, SIGUSR1) ? "yes" : "no");
  return report;
  (void)arg;
}
static int SigWait(void) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGUSR2);
  CHECK(pthread_sigmask(SIG_BLOCK, &set, NULL) == 0);  // every thread made from now blocks them
  pthread_t waiter;
  StartThread(&waiter, SigWaiter, NULL);
  struct timespec settle = {0, 20 * 1000 * 1000};
  nanosleep(&settle, NULL);  // the waiter is in sigwait
  kill(getpid(), SIGUSR1);
  while (atomic_load(&waited_count) < 1) sched_yield();
  CHECK(pthread_kill(waiter, SIGUSR2) == 0);
  CHECK(pthread_join(waiter, NULL) == 0);
  printf("sigwait took %s then %s\n", sigabbrev_np(atomic_load(&waited[0])),
         sigabbrev_np(atomic_load(&waited[1])));
  // Nobody waits now: a timed wait of main's own times out.
  struct timespec short_wait = {0, 10 * 1000 * 1000};
  int got = sigtimedwait(&set, NULL, &short_wait);
  printf("sigtimedwait: %s\n", got < 0 ? strerrorname_np(errno) : sigabbrev_np(got));
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnTerm;
  sigaction(SIGTERM, &sa, NULL);
  pthread_t pauser;
  StartThread(&pauser, Pauser, NULL);
  nanosleep(&settle, NULL);  // the pauser is in pause()
  CHECK(pthread_kill(pauser, SIGTERM) == 0);
  void* result;
  CHECK(pthread_join(pauser, &result) == 0);
  printf("pause returned EINTR after the handler: %s\n",
         result == (void*)1 && atomic_load(&term_handled) ? "yes" : "no");
  // sigsuspend: SIGUSR1 is blocked in every thread; the suspender lets it in while it waits.
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnUsr;
  sigaction(SIGUSR1, &sa, NULL);
  atomic_store(&handled_in, 0);
  pthread_t suspender;
  StartThread(&suspender, Suspender, NULL);
  nanosleep(&settle, NULL);  // the suspender is in sigsuspend
  kill(getpid(), SIGUSR1);   // blocked in main: only the suspender can take it
  CHECK(pthread_join(suspender, &result) == 0);
  printf("sigsuspend: %s\n", (const char*)result);
  return 0;
}

// ---- robust: a thread dies holding a robust mutex; the next locker gets EOWNERDEAD ---------
static pthread_mutex_t robust;
static void* DieHolding(void* arg) {
  CHECK(pthread_mutex_lock(&robust) == 0);
  return arg;  // ends without unlocking
}
static sem_t robust_release;
static atomic_int robust_held;
static void* DieHoldingLater(void* arg) {
  CHECK(pthread_mutex_lock(&robust) == 0);
  atomic_store(&robust_held, 1);
  sem_wait(&robust_release);
  return arg;  // ends without unlocking
}
static void* WaitForRobust(void* arg) {
  int err = pthread_mutex_lock(&robust);
  if (err == EOWNERDEAD) {
    pthread_mutex_consistent(&robust);
  }
  pthread_mutex_unlock(&robust);
  return (void*)(intptr_t)err;
  (void)arg;
}
static int Robust(void) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  CHECK(pthread_mutex_init(&robust, &attr) == 0);
  pthread_t holder;
  StartThread(&holder, DieHolding, NULL);
  CHECK(pthread_join(holder, NULL) == 0);
  int err = pthread_mutex_lock(&robust);
  printf("lock after the owner died: %s\n", strerrorname_np(err));
  CHECK(pthread_mutex_consistent(&robust) == 0);
  CHECK(pthread_mutex_unlock(&robust) == 0);
  // A waiter blocked on the mutex when its owner dies is woken with EOWNERDEAD.
  pthread_t second_holder, waiter;
  CHECK(pthread_mutex_lock(&robust) == 0);
  StartThread(&waiter, WaitForRobust, NULL);
  struct timespec settle = {0, 20 * 1000 * 1000};
  nanosleep(&settle, NULL);  // the waiter waits on the mutex main holds
  CHECK(pthread_mutex_unlock(&robust) == 0);
  void* result;
  CHECK(pthread_join(waiter, &result) == 0);
  printf("waiter after a plain unlock: %s\n", (int)(intptr_t)result == 0 ? "0" : "error");
  CHECK(sem_init(&robust_release, 0, 0) == 0);
  StartThread(&second_holder, DieHoldingLater, NULL);
  while (!atomic_load(&robust_held)) sched_yield();
  StartThread(&waiter, WaitForRobust, NULL);
  nanosleep(&settle, NULL);   // the waiter waits on the mutex the holder holds
  sem_post(&robust_release);  // the holder ends, the mutex still locked
  CHECK(pthread_join(second_holder, NULL) == 0);
  CHECK(pthread_join(waiter, &result) == 0);
  printf("waiter when the owner died: %s\n", strerrorname_np((int)(intptr_t)result));
  return 0;
}

// ---- barrier: rounds of a barrier among 4 threads, and a read-write lock --------------------
static pthread_barrier_t barrier;
static pthread_rwlock_t rwlock = PTHREAD_RWLOCK_INITIALIZER;
static int shared_rounds[4];
static void* BarrierWorker(void* arg) {
  int me = (int)(intptr_t)arg;
  for (int round = 0; round < 10; ++round) {
    pthread_rwlock_wrlock(&rwlock);
    shared_rounds[me]++;
    pthread_rwlock_unlock(&rwlock);
    pthread_barrier_wait(&barrier);
    pthread_rwlock_rdlock(&rwlock);
    for (int i = 0; i < 4; ++i) CHECK(shared_rounds[i] == round + 1);
    pthread_rwlock_unlock(&rwlock);
    pthread_barrier_wait(&barrier);
  }
  return NULL;
}
static int Barrier(void) {
  CHECK(pthread_barrier_init(&barrier, NULL, 4) == 0);
  pthread_t threads[3];
  for (int i = 1; i < 4; ++i) StartThread(&threads[i - 1], BarrierWorker, (void*)(intptr_t)i);
  BarrierWorker((void*)0);
  for (int i = 0; i < 3; ++i) CHECK(pthread_join(threads[i], NULL) == 0);
  printf("rounds %d %d %d %d\n", shared_rounds[0], shared_rounds[1], shared_rounds[2],
         shared_rounds[3]);
  return 0;
}

// ---- exit: main ends with pthread_exit; the last thread's exit() sets the status -------------
static atomic_int main_printed;
static void* LastOne(void* arg) {
  struct timespec ts = {0, 1000 * 1000};
  while (!atomic_load(&main_printed)) nanosleep(&ts, NULL);  // the lines in one order
  nanosleep(&ts, NULL);
  printf("last thread exits with 3\n");
  fflush(stdout);
  exit(3);
  return arg;
}
static int Exit(void) {
  pthread_t last;
  StartThread(&last, LastOne, NULL);
  printf("main calls pthread_exit\n");
  fflush(stdout);
  atomic_store(&main_printed, 1);
  pthread_exit(NULL);
}

// ---- detached: a detached thread finishes on its own; its stack is reused -------------------
static void* Detached(void* arg) {
  sem_post(arg);
  return NULL;
}
static int DetachedThreads(void) {
  sem_t done;
  CHECK(sem_init(&done, 0, 0) == 0);
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  for (int i = 0; i < 50; ++i) {
    pthread_t t;
    CHECK(pthread_create(&t, &attr, Detached, &done) == 0);
    CHECK(sem_wait(&done) == 0);
  }
  printf("50 detached threads ran\n");
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: threads SCENARIO\n");
    return 2;
  }
  const char* s = argv[1];
  if (strcmp(s, "reduce") == 0) return Reduce();
  if (strcmp(s, "queue") == 0) return Queue();
  if (strcmp(s, "tls") == 0) return Tls();
  if (strcmp(s, "many") == 0) return Many();
  if (strcmp(s, "spin") == 0) return Spin();
  if (strcmp(s, "parallel") == 0) return Parallel();
  if (strcmp(s, "kill_spinner") == 0) return KillSpinner();
  if (strcmp(s, "timed") == 0) return Timed();
  if (strcmp(s, "cancel") == 0) return Cancel();
  if (strcmp(s, "signals") == 0) return Signals();
  if (strcmp(s, "barrier") == 0) return Barrier();
  if (strcmp(s, "sigwait") == 0) return SigWait();
  if (strcmp(s, "robust") == 0) return Robust();
  if (strcmp(s, "exit") == 0) return Exit();
  if (strcmp(s, "detached") == 0) return DetachedThreads();
  fprintf(stderr, "unknown scenario %s\n", s);
  return 2;
}
