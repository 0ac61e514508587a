// poll: poll, ppoll, select and pselect over pipe ends, one scenario per run (argv[1]). The
// output is deterministic (threads only write or signal after a delay, and are joined), so
// tests/integration/pipes_test.cc compares it byte for byte with a native run.
//
//   poll      poll and ppoll: ready at once, a timeout, waiting for a writer thread,
//             POLLNVAL/POLLHUP/POLLERR, ppoll's signal mask letting a signal in
//   select    select and pselect: the same cases, the sets cleared at a timeout
#define _GNU_SOURCE
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <time.h>
#include <unistd.h>

#include "guest_check.h"

static volatile sig_atomic_t caught;
static void Caught(int signal) { caught = signal; }

static void SetAction(int signal, void (*handler)(int), int flags) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigemptyset(&action.sa_mask);
  CHECK(sigaction(signal, &action, NULL) == 0);
}

// ---- poll -----------------------------------------------------------------------------------
struct Delayed {
  int fd;
  int delay_ms;
  pthread_t target;  // sent SIGUSR1 instead of writing when set
  int signal;
};
static void* WriteLater(void* arg) {
  struct Delayed* d = arg;
  SleepMs(d->delay_ms);
  if (d->signal) {
    CHECK(pthread_kill(d->target, SIGUSR1) == 0);
  } else {
    CHECK(write(d->fd, "!", 1) == 1);
  }
  return NULL;
}

static int Poll(void) {
  int a[2], b[2];
  CHECK(pipe(a) == 0 && pipe(b) == 0);
  struct pollfd fds[3] = {{a[0], POLLIN, 0}, {b[0], POLLIN, 0}, {-1, POLLIN, 0}};
  int n = poll(fds, 3, 0);
  printf("empty, no timeout: %d, revents %#x %#x\n", n, fds[0].revents, fds[1].revents);
  CHECK(write(b[1], "x", 1) == 1);
  n = poll(fds, 3, 0);
  printf("b has a byte: %d, revents %#x %#x %#x\n", n, fds[0].revents, fds[1].revents,
         fds[2].revents);
  char byte;
  CHECK(read(b[0], &byte, 1) == 1);
  struct timespec start, end;
  clock_gettime(CLOCK_MONOTONIC, &start);
  n = poll(fds, 2, 50);
  clock_gettime(CLOCK_MONOTONIC, &end);
  long ms = (end.tv_sec - start.tv_sec) * 1000 + (end.tv_nsec - start.tv_nsec) / 1000000;
  printf("50 ms timeout: %d, revents %#x, waited at least 45 ms %d\n", n, fds[0].revents, ms >= 45);

  // Waiting without a timeout for a writer thread.
  struct Delayed later = {a[1], 30, 0, 0};
  pthread_t writer;
  StartThread(&writer, WriteLater, &later);
  n = poll(fds, 2, -1);
  printf("writer thread: %d, revents %#x %#x\n", n, fds[0].revents, fds[1].revents);
  CHECK(pthread_join(writer, NULL) == 0);
  CHECK(read(a[0], &byte, 1) == 1);

  // The ends' conditions.
  struct pollfd ends[3] = {{a[0], POLLIN, 0}, {b[1], POLLOUT, 0}, {77, POLLIN, 0}};
  n = poll(ends, 3, 0);
  printf("writable, closed fd: %d, revents %#x %#x %#x\n", n, ends[0].revents, ends[1].revents,
         ends[2].revents);
  CHECK(close(a[1]) == 0);
  CHECK(close(b[0]) == 0);
  n = poll(ends, 3, 0);
  printf("peers closed: %d, revents %#x %#x %#x\n", n, ends[0].revents, ends[1].revents,
         ends[2].revents);
  close(a[0]);
  close(b[1]);

  // ppoll: a signal blocked outside the call, let in by its mask, ends the wait.
  CHECK(pipe(a) == 0);
  SetAction(SIGUSR1, Caught, SA_RESTART);  // poll is never restarted, whatever SA_RESTART says
  caught = 0;
  sigset_t usr1, during, after;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  CHECK(sigprocmask(SIG_BLOCK, &usr1, NULL) == 0);
  sigemptyset(&during);
  struct Delayed signaller = {-1, 30, pthread_self(), 1};
  pthread_t sender;
  StartThread(&sender, WriteLater, &signaller);
  struct pollfd one = {a[0], POLLIN, 0};
  SHOW("ppoll with SIGUSR1 let in", ppoll(&one, 1, NULL, &during));
  CHECK(pthread_join(sender, NULL) == 0);
  CHECK(sigprocmask(SIG_SETMASK, NULL, &after) == 0);
  printf("caught %d, SIGUSR1 blocked again %d\n", (int)caught, sigismember(&after, SIGUSR1));
  struct timespec brief = {0, 20000000};
  SHOW("ppoll timing out", ppoll(&one, 1, &brief, &during));
  CHECK(write(a[1], "y", 1) == 1);
  SHOW("ppoll with data", ppoll(&one, 1, NULL, NULL));
  printf("revents %#x\n", one.revents);
  return 0;
}

// ---- select ---------------------------------------------------------------------------------
static int Select(void) {
  int a[2], b[2];
  CHECK(pipe(a) == 0 && pipe(b) == 0);
  const int top = (a[1] > b[1] ? a[1] : b[1]) + 1;
  fd_set rd, wr;
  FD_ZERO(&rd);
  FD_SET(a[0], &rd);
  FD_SET(b[0], &rd);
  struct timeval tv = {0, 0};
  int n = select(top, &rd, NULL, NULL, &tv);
  printf("empty, zero timeout: %d, a %d b %d\n", n, FD_ISSET(a[0], &rd), FD_ISSET(b[0], &rd));
  CHECK(write(b[1], "x", 1) == 1);
  FD_ZERO(&rd);
  FD_SET(a[0], &rd);
  FD_SET(b[0], &rd);
  FD_ZERO(&wr);
  FD_SET(a[1], &wr);
  n = select(top, &rd, &wr, NULL, &tv);
  printf("b has a byte, a writable: %d, read a %d b %d, write a %d\n", n, FD_ISSET(a[0], &rd),
         FD_ISSET(b[0], &rd), FD_ISSET(a[1], &wr));
  char byte;
  CHECK(read(b[0], &byte, 1) == 1);
  FD_ZERO(&rd);
  FD_SET(a[0], &rd);
  FD_SET(b[0], &rd);
  tv = (struct timeval){0, 50000};
  n = select(top, &rd, NULL, NULL, &tv);
  printf("50 ms timeout: %d, a %d b %d, time left %ld.%06ld\n", n, FD_ISSET(a[0], &rd),
         FD_ISSET(b[0], &rd), (long)tv.tv_sec, (long)tv.tv_usec);

  // Waiting for a writer thread, without and with a (long) timeout.
  for (int with_timeout = 0; with_timeout < 2; ++with_timeout) {
    struct Delayed later = {a[1], 30, 0, 0};
    pthread_t writer;
    StartThread(&writer, WriteLater, &later);
    FD_ZERO(&rd);
    FD_SET(a[0], &rd);
    FD_SET(b[0], &rd);
    tv = (struct timeval){5, 0};
    n = select(top, &rd, NULL, NULL, with_timeout ? &tv : NULL);
    printf("writer thread%s: %d, a %d b %d\n", with_timeout ? ", 5 s timeout" : "", n,
           FD_ISSET(a[0], &rd), FD_ISSET(b[0], &rd));
    CHECK(pthread_join(writer, NULL) == 0);
    CHECK(read(a[0], &byte, 1) == 1);
  }

  // (A low closed fd: Linux ignores set bits past its fd table's size, which varies.)
  const int closed = dup(0);
  CHECK(closed >= 0 && close(closed) == 0);
  FD_ZERO(&rd);
  FD_SET(closed, &rd);
  tv = (struct timeval){0, 0};
  SHOW("a closed fd", select(closed + 1, &rd, NULL, NULL, &tv));
  CHECK(close(a[1]) == 0);
  FD_ZERO(&rd);
  FD_SET(a[0], &rd);
  n = select(a[0] + 1, &rd, NULL, NULL, NULL);
  printf("writer closed: %d, a %d\n", n, FD_ISSET(a[0], &rd));

  // pselect: a signal blocked outside the call, let in by its mask, ends the wait.
  SetAction(SIGUSR1, Caught, SA_RESTART);
  caught = 0;
  sigset_t usr1, during, after;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  CHECK(sigprocmask(SIG_BLOCK, &usr1, NULL) == 0);
  sigemptyset(&during);
  struct Delayed signaller = {-1, 30, pthread_self(), 1};
  pthread_t sender;
  StartThread(&sender, WriteLater, &signaller);
  FD_ZERO(&rd);
  FD_SET(b[0], &rd);
  SHOW("pselect with SIGUSR1 let in", pselect(b[0] + 1, &rd, NULL, NULL, NULL, &during));
  CHECK(pthread_join(sender, NULL) == 0);
  CHECK(sigprocmask(SIG_SETMASK, NULL, &after) == 0);
  printf("caught %d, SIGUSR1 blocked again %d\n", (int)caught, sigismember(&after, SIGUSR1));
  struct timespec brief = {0, 20000000};
  FD_ZERO(&rd);
  FD_SET(b[0], &rd);
  n = pselect(b[0] + 1, &rd, NULL, NULL, &brief, &during);
  printf("pselect timing out: %d, b %d\n", n, FD_ISSET(b[0], &rd));
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: poll SCENARIO\n");
    return 2;
  }
  signal(SIGPIPE, SIG_IGN);  // the native run inherits it ignored; the VM starts at SIG_DFL
  if (strcmp(argv[1], "poll") == 0) return Poll();
  if (strcmp(argv[1], "select") == 0) return Select();
  fprintf(stderr, "poll: unknown scenario %s\n", argv[1]);
  return 2;
}
