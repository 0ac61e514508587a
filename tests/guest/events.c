// events: eventfd, timerfd and epoll, one scenario per run (argv[1]). The output is
// deterministic (threads and child processes only write after a delay, and are joined or
// waited for; times are printed as bounds), so tests/integration/pipes_test.cc compares it byte
// for byte with a native run.
//
//   eventfd   counts, EFD_SEMAPHORE, EAGAIN, a blocking read woken by a thread, a blocking
//             write woken by a reader, a child process writing to its parent's eventfd
//   timerfd   relative and absolute (CLOCK_MONOTONIC) timers, periods, gettime, old values,
//             blocking reads, poll, argument errors
//   epoll     level and edge triggering, EPOLLONESHOT, MOD/DEL, timeouts, a waiter woken by a
//             thread, epoll_pwait's mask letting a signal in (EINTR), nested instances, closed
//             fds leaving the interest list, an instance shared with a child process
//   signalfd  blocked signals read as records (kill, raise, a thread's kill, a child's
//             SIGCHLD), EAGAIN, short buffers, poll and epoll readiness, a blocking read, a
//             new mask, signals outside the mask left pending
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guest_check.h"

static int64_t NowMs(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

static uint64_t ReadCount(int fd) {
  uint64_t value = 0;
  CHECK(read(fd, &value, sizeof value) == sizeof value);
  return value;
}

static void WriteCount(int fd, uint64_t value) {
  CHECK(write(fd, &value, sizeof value) == sizeof value);
}

// ---- eventfd ----------------------------------------------------------------------------------

struct Delayed {
  int fd;
  int delay_ms;
  uint64_t value;
};

static void* WriteLater(void* arg) {
  const struct Delayed* d = arg;
  SleepMs(d->delay_ms);
  WriteCount(d->fd, d->value);
  return NULL;
}

static uint64_t reader_took;

static void* ReadLater(void* arg) {
  const struct Delayed* d = arg;
  SleepMs(d->delay_ms);
  reader_took = ReadCount(d->fd);
  return NULL;
}

static void Eventfd(void) {
  int fd = eventfd(3, 0);
  CHECK(fd >= 0);
  printf("flags: %#x\n", fcntl(fd, F_GETFL));
  WriteCount(fd, 4);
  printf("read: %llu\n", (unsigned long long)ReadCount(fd));
  uint64_t small = 0;
  SHOW("short read", read(fd, &small, 4));
  uint64_t max = UINT64_MAX;
  SHOW("write of the maximum", write(fd, &max, 8));

  int sem = eventfd(2, EFD_SEMAPHORE | EFD_NONBLOCK);
  printf("semaphore: %llu", (unsigned long long)ReadCount(sem));
  printf(" %llu\n", (unsigned long long)ReadCount(sem));
  SHOW("semaphore empty", read(sem, &small, 8));

  // A blocking read waits for a writer thread.
  struct Delayed later = {fd, 50, 7};
  pthread_t t;
  StartThread(&t, WriteLater, &later);
  printf("waited for: %llu\n", (unsigned long long)ReadCount(fd));
  pthread_join(t, NULL);

  // A write that would overflow waits for a reader (non-blocking: EAGAIN).
  int full = eventfd(0, EFD_NONBLOCK);
  WriteCount(full, UINT64_MAX - 1);
  uint64_t one = 1;
  SHOW("overflowing write", write(full, &one, 8));
  CHECK(fcntl(full, F_SETFL, 0) == 0);
  struct Delayed reader = {full, 50, 0};
  StartThread(&t, ReadLater, &reader);
  SHOW("blocking overflowing write", write(full, &one, 8));
  pthread_join(t, NULL);
  printf("reader took %llu\n", (unsigned long long)reader_took);
  printf("after: %llu\n", (unsigned long long)ReadCount(full));

  // A child process shares the eventfd.
  pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    SleepMs(30);
    WriteCount(fd, 11);
    _exit(0);
  }
  printf("from the child: %llu\n", (unsigned long long)ReadCount(fd));
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child);
  printf("child status: %d\n", status);
  SHOW("eventfd2 bad flags", eventfd(0, O_APPEND));
}

// ---- timerfd ----------------------------------------------------------------------------------

static void SetTimer(int fd, int flags, struct timespec value, struct timespec interval) {
  struct itimerspec spec = {.it_interval = interval, .it_value = value};
  CHECK(timerfd_settime(fd, flags, &spec, NULL) == 0);
}

static void Timerfd(void) {
  int fd = timerfd_create(CLOCK_MONOTONIC, 0);
  CHECK(fd >= 0);
  printf("flags: %#x\n", fcntl(fd, F_GETFL));
  struct itimerspec now;
  CHECK(timerfd_gettime(fd, &now) == 0);
  printf("disarmed: %ld %ld\n", (long)now.it_value.tv_sec, now.it_value.tv_nsec);

  // Relative, once: a blocking read waits about 40 ms.
  int64_t start = NowMs();
  SetTimer(fd, 0, (struct timespec){0, 40000000}, (struct timespec){0, 0});
  uint64_t expirations = ReadCount(fd);
  int64_t took = NowMs() - start;
  printf("one-shot: %llu, waited at least 35 ms: %s\n", (unsigned long long)expirations,
         took >= 35 ? "yes" : "no");

  // Periodic: 3 reads of at least one expiration each.
  SetTimer(fd, 0, (struct timespec){0, 10000000}, (struct timespec){0, 10000000});
  uint64_t total = 0;
  for (int i = 0; i < 3; ++i) total += ReadCount(fd);
  printf("periodic: at least 3: %s\n", total >= 3 ? "yes" : "no");
  CHECK(timerfd_gettime(fd, &now) == 0);
  printf("interval: %ld %ld, next within it: %s\n", (long)now.it_interval.tv_sec,
         now.it_interval.tv_nsec,
         now.it_value.tv_sec == 0 && now.it_value.tv_nsec <= 10000000 ? "yes" : "no");

  // Disarm, and the old setting comes back.
  struct itimerspec off = {{0, 0}, {0, 0}}, old;
  CHECK(timerfd_settime(fd, 0, &off, &old) == 0);
  printf("old interval: %ld\n", old.it_interval.tv_nsec);

  // Absolute on CLOCK_MONOTONIC: 30 ms from now.
  struct timespec when;
  clock_gettime(CLOCK_MONOTONIC, &when);
  when.tv_nsec += 30000000;
  if (when.tv_nsec >= 1000000000) {
    when.tv_sec += 1;
    when.tv_nsec -= 1000000000;
  }
  start = NowMs();
  SetTimer(fd, TFD_TIMER_ABSTIME, when, (struct timespec){0, 0});
  CHECK(timerfd_gettime(fd, &now) == 0);
  // (Within 31 ms: in a VM's first second its vDSO clock may run a little ahead of the
  // host's, while the TSC frequency is known from 20 ms only.)
  printf("absolute: due within 30 ms: %s\n",
         now.it_value.tv_sec == 0 && now.it_value.tv_nsec <= 31000000 ? "yes" : "no");
  expirations = ReadCount(fd);
  printf("absolute: %llu, waited at least 25 ms: %s\n", (unsigned long long)expirations,
         NowMs() - start >= 25 ? "yes" : "no");
  // An absolute time in the past is due at once.
  SetTimer(fd, TFD_TIMER_ABSTIME, (struct timespec){1, 0}, (struct timespec){0, 0});
  printf("past: %llu\n", (unsigned long long)ReadCount(fd));

  // Non-blocking, and poll.
  int nb = timerfd_create(CLOCK_BOOTTIME, TFD_NONBLOCK | TFD_CLOEXEC);
  uint64_t value;
  SHOW("non-blocking unexpired", read(nb, &value, 8));
  SetTimer(nb, 0, (struct timespec){0, 20000000}, (struct timespec){0, 0});
  struct pollfd p = {nb, POLLIN, 0};
  SHOW("poll before", poll(&p, 1, 0));
  SHOW("poll waits", poll(&p, 1, 5000));
  printf("revents: %#x, read: %llu\n", p.revents, (unsigned long long)ReadCount(nb));

  SHOW("bad clock", timerfd_create(CLOCK_PROCESS_CPUTIME_ID, 0));
  SHOW("bad flags", timerfd_create(CLOCK_MONOTONIC, O_APPEND));
  struct itimerspec bad = {{0, 0}, {0, 1000000000}};
  SHOW("bad nanoseconds", timerfd_settime(fd, 0, &bad, NULL));
  SHOW("not a timerfd", timerfd_settime(1, 0, &off, NULL));
  SHOW("closed fd", timerfd_gettime(99, &now));
}

// ---- epoll ------------------------------------------------------------------------------------

static void Add(int epfd, int fd, uint32_t events, uint64_t data) {
  struct epoll_event e = {.events = events, .data.u64 = data};
  CHECK(epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &e) == 0);
}

// Waits with `timeout` and prints what came: "label: n [data/events ...]".
static void Show(const char* label, int epfd, int timeout) {
  struct epoll_event got[8];
  int n = epoll_wait(epfd, got, 8, timeout);
  printf("%s: %d", label, n);
  if (n < 0) printf(" (%s)", strerror(errno));
  for (int i = 0; i < n; ++i) {
    printf(" %llu/%#x", (unsigned long long)got[i].data.u64, got[i].events);
  }
  printf("\n");
}

static volatile sig_atomic_t caught;
static void OnUsr1(int signal) {
  (void)signal;
  caught = 1;
}

static void* SignalLater(void* arg) {
  SleepMs(50);
  kill(getpid(), SIGUSR1);
  (void)arg;
  return NULL;
}

static void Epoll(void) {
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  CHECK(epfd >= 0);
  printf("cloexec: %d\n", fcntl(epfd, F_GETFD));
  int pipefd[2];
  CHECK(pipe(pipefd) == 0);
  int efd = eventfd(0, EFD_NONBLOCK);
  Add(epfd, pipefd[0], EPOLLIN, 1);
  Add(epfd, efd, EPOLLIN, 2);
  Show("nothing yet", epfd, 0);
  int64_t start = NowMs();
  Show("a timeout", epfd, 30);
  printf("waited at least 25 ms: %s\n", NowMs() - start >= 25 ? "yes" : "no");

  CHECK(write(pipefd[1], "ab", 2) == 2);
  Show("level", epfd, 0);
  Show("level again", epfd, 0);
  char buf[4];
  CHECK(read(pipefd[0], buf, sizeof buf) == 2);

  // A waiter woken by a thread's write.
  struct Delayed later = {efd, 50, 5};
  pthread_t t;
  StartThread(&t, WriteLater, &later);
  Show("woken", epfd, -1);
  pthread_join(t, NULL);
  printf("count: %llu\n", (unsigned long long)ReadCount(efd));

  // Edge-triggered: one report per change.
  struct epoll_event e = {.events = EPOLLIN | EPOLLET, .data.u64 = 3};
  CHECK(epoll_ctl(epfd, EPOLL_CTL_MOD, pipefd[0], &e) == 0);
  CHECK(write(pipefd[1], "c", 1) == 1);
  Show("edge", epfd, 0);
  Show("edge again", epfd, 0);
  CHECK(write(pipefd[1], "d", 1) == 1);
  Show("edge after a write", epfd, 0);
  CHECK(read(pipefd[0], buf, sizeof buf) == 2);

  // One-shot: disabled after one report until MOD re-arms it.
  e = (struct epoll_event){.events = EPOLLIN | EPOLLONESHOT, .data.u64 = 4};
  CHECK(epoll_ctl(epfd, EPOLL_CTL_MOD, efd, &e) == 0);
  WriteCount(efd, 1);
  Show("one-shot", epfd, 0);
  Show("one-shot again", epfd, 0);
  CHECK(epoll_ctl(epfd, EPOLL_CTL_MOD, efd, &e) == 0);
  Show("re-armed", epfd, 0);
  CHECK(epoll_ctl(epfd, EPOLL_CTL_DEL, efd, NULL) == 0);
  Show("deleted", epfd, 0);
  (void)ReadCount(efd);

  SHOW("add twice", epoll_ctl(epfd, EPOLL_CTL_ADD, pipefd[0], &e));
  SHOW("delete unknown", epoll_ctl(epfd, EPOLL_CTL_DEL, efd, NULL));
  SHOW("add itself", epoll_ctl(epfd, EPOLL_CTL_ADD, epfd, &e));
  SHOW("not an instance", epoll_ctl(efd, EPOLL_CTL_ADD, pipefd[0], &e));
  SHOW("bad op", epoll_ctl(epfd, 42, pipefd[0], &e));
  struct epoll_event out[1];
  SHOW("no room", epoll_wait(epfd, out, 0, 0));
  SHOW("wait on an eventfd", epoll_wait(efd, out, 1, 0));
  SHOW("create 0", epoll_create(0));

  // The write end watched for EPOLLOUT, then its reader closed: EPOLLERR comes with it.
  int other[2];
  CHECK(pipe(other) == 0);
  int ep2 = epoll_create1(0);
  Add(ep2, other[1], EPOLLOUT, 5);
  Show("writable", ep2, 0);
  close(other[0]);
  Show("reader gone", ep2, 0);
  // Closing the watched fd takes it out of the instance.
  close(other[1]);
  Show("closed", ep2, 0);

  // Nested: the outer instance sees the inner one readable.
  int outer = epoll_create1(0);
  Add(outer, epfd, EPOLLIN, 6);
  Show("outer idle", outer, 0);
  CHECK(write(pipefd[1], "e", 1) == 1);
  Show("outer", outer, 0);
  CHECK(read(pipefd[0], buf, sizeof buf) == 1);

  // epoll_pwait: its mask lets SIGUSR1 in, which ends the wait with EINTR.
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnUsr1;
  sa.sa_flags = SA_RESTART;  // epoll waits are never restarted
  sigaction(SIGUSR1, &sa, NULL);
  sigset_t block, open_mask;
  sigemptyset(&block);
  sigaddset(&block, SIGUSR1);
  pthread_sigmask(SIG_BLOCK, &block, NULL);
  sigemptyset(&open_mask);
  StartThread(&t, SignalLater, NULL);
  struct epoll_event got[2];
  errno = 0;
  int n = epoll_pwait(epfd, got, 2, 5000, &open_mask);
  printf("pwait: %d (%s), caught: %d\n", n, n < 0 ? strerror(errno) : "ok", (int)caught);
  pthread_join(t, NULL);

  // A child process waits on the same instance for its parent's write.
  pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    struct epoll_event one;
    int got_one = epoll_wait(epfd, &one, 1, 5000);
    printf("child: %d %llu\n", got_one, (unsigned long long)one.data.u64);
    _exit(got_one == 1 ? 0 : 1);
  }
  SleepMs(30);
  CHECK(write(pipefd[1], "f", 1) == 1);
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child);
  printf("child status: %d\n", status);
}

// ---- signalfd ---------------------------------------------------------------------------------

// Reads `room` bytes from a signalfd and prints "label: n [signal/code/from ...]", `from`
// telling the sender apart without printing a pid (self, `other`, or another).
static void ReadRecords(const char* label, int fd, size_t room, pid_t other) {
  struct signalfd_siginfo got[4];
  ssize_t n = read(fd, got, room);
  printf("%s: %zd", label, n);
  if (n < 0) printf(" (%s)", strerror(errno));
  for (ssize_t i = 0; i < n / (ssize_t)sizeof got[0]; ++i) {
    const pid_t from = (pid_t)got[i].ssi_pid;
    printf(" %u/%d/%s", got[i].ssi_signo, got[i].ssi_code,
           from == getpid() ? "self"
           : from == other  ? "child"
                            : "another");
  }
  printf("\n");
}

static void Signalfd(void) {
  sigset_t blocked;
  sigemptyset(&blocked);
  sigaddset(&blocked, SIGUSR1);
  sigaddset(&blocked, SIGUSR2);
  sigaddset(&blocked, SIGCHLD);
  sigaddset(&blocked, SIGTERM);
  CHECK(sigprocmask(SIG_BLOCK, &blocked, NULL) == 0);
  sigset_t mask;
  sigemptyset(&mask);
  sigaddset(&mask, SIGUSR1);
  sigaddset(&mask, SIGUSR2);
  int fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
  CHECK(fd >= 0);
  printf("flags: %#x cloexec %d\n", fcntl(fd, F_GETFL) & ~0100000, fcntl(fd, F_GETFD));
  ReadRecords("nothing pending", fd, sizeof(struct signalfd_siginfo), 0);
  ReadRecords("short buffer", fd, 100, 0);

  raise(SIGUSR2);
  kill(getpid(), SIGTERM);  // blocked, not in the mask: stays pending
  kill(getpid(), SIGUSR1);
  struct pollfd p = {.fd = fd, .events = POLLIN};
  int ready = poll(&p, 1, 0);
  printf("poll: %d %#x\n", ready, p.revents);
  ReadRecords("two pending", fd, 4 * sizeof(struct signalfd_siginfo), 0);
  p.revents = 0;
  ready = poll(&p, 1, 0);
  printf("poll after: %d %#x\n", ready, p.revents);
  sigset_t pending;
  CHECK(sigpending(&pending) == 0);
  printf("SIGTERM still pending: %d\n", sigismember(&pending, SIGTERM));

  // A blocking read, woken by a thread's kill.
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  int waiting = signalfd(-1, &usr1, 0);
  CHECK(waiting >= 0);
  pthread_t thread;
  CHECK(pthread_create(&thread, NULL, SignalLater, NULL) == 0);
  const int64_t start = NowMs();
  ReadRecords("blocking read", waiting, sizeof(struct signalfd_siginfo), 0);
  printf("waited: %s\n", NowMs() - start >= 40 ? ">= 40 ms" : "< 40 ms");
  CHECK(pthread_join(thread, NULL) == 0);

  // A new mask for the first: a child's end, seen through epoll.
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  printf("same fd: %d\n", signalfd(fd, &chld, 0) == fd);
  int epfd = epoll_create1(EPOLL_CLOEXEC);
  Add(epfd, fd, EPOLLIN, 7);
  Show("epoll before", epfd, 0);
  pid_t child = fork();
  CHECK(child >= 0);
  if (child == 0) {
    SleepMs(30);
    _exit(3);
  }
  Show("epoll", epfd, 5000);
  ReadRecords("child ended", fd, sizeof(struct signalfd_siginfo), child);
  int status = 0;
  CHECK(waitpid(child, &status, 0) == child);
  printf("child status: %d\n", status);
  Show("epoll after", epfd, 0);
  CHECK(close(epfd) == 0 && close(fd) == 0 && close(waiting) == 0);
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const char* scenario = argc > 1 ? argv[1] : "";
  if (strcmp(scenario, "eventfd") == 0) {
    Eventfd();
  } else if (strcmp(scenario, "timerfd") == 0) {
    Timerfd();
  } else if (strcmp(scenario, "epoll") == 0) {
    Epoll();
  } else if (strcmp(scenario, "signalfd") == 0) {
    Signalfd();
  } else {
    printf("usage: events eventfd|timerfd|epoll|signalfd\n");
    return 2;
  }
  return 0;
}
