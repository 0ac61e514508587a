// fork_threads: sf_clone in a multi-threaded guest clones every thread (SnowFlock's semantics).
// Before the clone, three workers exist: one waits on a condition variable, one sleeps in a
// loop, one spins on an atomic. After sf_clone(2), each VM (parent and clones) wakes the
// waiter, tells the others to stop, joins all three and prints what each did there — the
// workers' results depend on the VM's clone ID, so each thread must run inside its own VM.
// Clones exit with 10 + id; the parent prints the outcomes.
#include <flurry/sf.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t wake = PTHREAD_COND_INITIALIZER;
static int go;               // guarded by lock
static atomic_int stop;      // the sleeper and the spinner end when set
static atomic_int started;   // workers that are running
static atomic_int clone_id;  // this VM's clone ID, set after sf_clone

static void* Waiter(void* arg) {
  (void)arg;
  pthread_mutex_lock(&lock);
  atomic_fetch_add(&started, 1);
  while (!go) pthread_cond_wait(&wake, &lock);
  pthread_mutex_unlock(&lock);
  return (void*)(intptr_t)(100 + atomic_load(&clone_id));
}

static void* Sleeper(void* arg) {
  (void)arg;
  atomic_fetch_add(&started, 1);
  while (!atomic_load(&stop)) {
    struct timespec ts = {0, 2 * 1000 * 1000};
    nanosleep(&ts, NULL);
  }
  return (void*)(intptr_t)(200 + atomic_load(&clone_id));
}

static void* Spinner(void* arg) {
  (void)arg;
  atomic_fetch_add(&started, 1);
  uint64_t spins = 0;
  while (!atomic_load(&stop)) ++spins;
  return (void*)(intptr_t)(300 + atomic_load(&clone_id) + (spins > 0 ? 0 : 1000));
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  pthread_t threads[3];
  void* (*bodies[3])(void*) = {Waiter, Sleeper, Spinner};
  for (int i = 0; i < 3; ++i) pthread_create(&threads[i], NULL, bodies[i], NULL);
  while (atomic_load(&started) < 3) sched_yield();
  struct timespec settle = {0, 20 * 1000 * 1000};  // the waiter waits, the sleeper sleeps
  nanosleep(&settle, NULL);

  sf_ticket_t t = sf_request_ticket(2);
  const int id = sf_clone(t);
  if (id < 0) {
    printf("sf_clone failed: %d\n", id);
    return 1;
  }
  atomic_store(&clone_id, id);
  pthread_mutex_lock(&lock);
  go = 1;
  pthread_cond_broadcast(&wake);
  pthread_mutex_unlock(&lock);
  atomic_store(&stop, 1);
  const char* names[3] = {"waiter", "sleeper", "spinner"};
  for (int i = 0; i < 3; ++i) {
    void* result;
    pthread_join(threads[i], &result);
    printf("clone %d: %s returned %ld\n", id, names[i], (long)(intptr_t)result);
  }
  if (id > 0) return 10 + id;
  struct sf_outcome out[2];
  memset(out, 0, sizeof out);
  int n = sf_join(t, out, 2);
  for (int i = 0; i < n; ++i) {
    printf("clone %d: kind %d status %d\n", out[i].id, (int)out[i].kind, out[i].status);
  }
  return 0;
}
