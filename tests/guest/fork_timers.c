// fork_timers: POSIX timers travel into clones. Before sf_clone(2) the parent has
//   A  a one-shot timer (SIGUSR1, blocked) that has fired: its signal is pending at the clone;
//   B  a one-shot timer (SIGUSR2, blocked) armed 200 ms ahead: it fires in each VM (or, on a
//      host slow enough, has fired and is pending at the clone: the same signal either way);
//   C  a SIGEV_NONE periodic timer: its interval is kept.
// Each VM (parent and clones) then takes A's and B's signals with sigwaitinfo and prints what
// they carry; the clones exit with 10 + id and the parent prints their outcomes.
#define _GNU_SOURCE
#include <flurry/sf.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static timer_t Create(int notify, int sig, int value) {
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = notify;
  ev.sigev_signo = sig;
  ev.sigev_value.sival_int = value;
  timer_t t;
  if (timer_create(CLOCK_MONOTONIC, &ev, &t) != 0) {
    perror("timer_create");
    _exit(2);
  }
  return t;
}

static void Arm(timer_t t, long value_ns, long interval_ns) {
  struct itimerspec s = {{interval_ns / 1000000000, interval_ns % 1000000000},
                         {value_ns / 1000000000, value_ns % 1000000000}};
  if (timer_settime(t, 0, &s, NULL) != 0) {
    perror("timer_settime");
    _exit(2);
  }
}

static void Take(int id, const char* name, int sig) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  siginfo_t info;
  memset(&info, 0, sizeof info);
  const int got = sigwaitinfo(&set, &info);
  printf("clone %d: timer %s: signal %d, si_code %d, si_value %d\n", id, name, got, info.si_code,
         info.si_value.sival_int);
}

int main(void) {
  setvbuf(stdout, NULL, _IONBF, 0);
  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGUSR1);
  sigaddset(&blocked, SIGUSR2);
  sigprocmask(SIG_BLOCK, &blocked, NULL);
  timer_t a = Create(SIGEV_SIGNAL, SIGUSR1, 11);
  timer_t b = Create(SIGEV_SIGNAL, SIGUSR2, 22);
  timer_t c = Create(SIGEV_NONE, 0, 33);
  Arm(a, 1000000, 0);
  for (;;) {  // until A has fired
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGUSR1)) break;
    struct timespec pause = {0, 1000000};
    nanosleep(&pause, NULL);
  }
  Arm(b, 200000000, 0);
  Arm(c, 3600000000000L, 50000000);
  sf_ticket_t t = sf_request_ticket(2);
  const int id = sf_clone(t);
  Take(id, "A", SIGUSR1);
  Take(id, "B", SIGUSR2);
  struct itimerspec left;
  if (timer_gettime(c, &left) != 0) {
    perror("timer_gettime");
    return 3;
  }
  printf("clone %d: timer C: interval %ld ns, armed %d\n", id, (long)left.it_interval.tv_nsec,
         left.it_value.tv_sec > 0);
  if (id > 0) return 10 + id;
  struct sf_outcome out[2];
  memset(out, 0, sizeof out);
  const int n = sf_join(t, out, 2);
  for (int i = 0; i < n; ++i) {
    printf("clone %d: kind %d status %d\n", out[i].id, (int)out[i].kind, out[i].status);
  }
  return 0;
}
