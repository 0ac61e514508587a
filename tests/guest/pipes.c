// pipes: pipe(2) and pipe2(2) as programs use them, one scenario per run (argv[1]). The
// output is deterministic (printed by one thread after the others are joined), so
// tests/integration/pipes_test.cc compares it byte for byte with a native run.
//
//   basic     pipe2, write, read, the writer closed: end of file
//   threads   a writer thread pushes 1 MiB through a pipe while the main thread reads it; the
//             other way round with a slow reader, so the writer finds the pipe full and
//             waits; a token bouncing between two threads over two pipes
//   nonblock  O_NONBLOCK ends: EAGAIN on an empty pipe and a full one, fcntl toggling it,
//             FIONREAD
//   eintr     a read waiting on an empty pipe, interrupted by a signal: EINTR without
//             SA_RESTART, made again with it (a thread's, and a lone thread's by an alarm)
//   sigpipe   a write without readers: SIGPIPE ignored (EPIPE), blocked (pending), caught
//             (the handler runs, EPIPE)
//   sigpipe-default  the same under SIG_DFL: the program dies of SIGPIPE
//   dup       dup, dup2, dup3 and F_DUPFD_CLOEXEC of pipe ends, close-on-exec flags, end of
//             file only when every write end is closed
//   whole     one blocking write (and writev) of 1 MiB to a pipe a slow reader drains returns
//             1 MiB; a signal after part was written ends it with that part (even under
//             SA_RESTART), one before anything was written with EINTR
//
// poll and select over pipe ends: tests/guest/poll.c.
//
// The harness that starts the native run ignores SIGPIPE (a disposition exec keeps), so every
// scenario sets the one it needs.
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "guest_check.h"

static void SetAction(int signal, void (*handler)(int), int flags) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = handler;
  action.sa_flags = flags;
  sigemptyset(&action.sa_mask);
  CHECK(sigaction(signal, &action, NULL) == 0);
}

// Writes all of [data, data + size), however the pipe takes it.
static void WriteAll(int fd, const uint8_t* data, size_t size) {
  while (size > 0) {
    ssize_t n = write(fd, data, size);
    if (n < 0 && errno == EINTR) continue;
    CHECK(n > 0);
    data += n;
    size -= (size_t)n;
  }
}

// FNV-1a over a stream, a byte at a time.
static uint64_t Fnv(uint64_t hash, const uint8_t* data, size_t size) {
  for (size_t i = 0; i < size; ++i) hash = (hash ^ data[i]) * 1099511628211ULL;
  return hash;
}
static const uint64_t kFnvStart = 14695981039346656037ULL;

static uint8_t PatternByte(size_t i) { return (uint8_t)((i * 2654435761u) >> 13); }

// ---- basic -----------------------------------------------------------------------------------
static int Basic(void) {
  int fds[2];
  CHECK(pipe2(fds, O_CLOEXEC) == 0);
  // (Not the numbers themselves: a native run may inherit more fds than 0, 1 and 2.)
  printf("fds in a row %d, cloexec %d %d\n", fds[1] == fds[0] + 1, fcntl(fds[0], F_GETFD),
         fcntl(fds[1], F_GETFD));
  printf("flags %#x %#x\n", fcntl(fds[0], F_GETFL), fcntl(fds[1], F_GETFL));
  const char message[] = "hello, pipe";
  printf("wrote %zd\n", write(fds[1], message, strlen(message)));
  char buf[64] = {0};
  ssize_t n = read(fds[0], buf, 5);
  printf("read %zd: %.*s\n", n, (int)n, buf);
  n = read(fds[0], buf, sizeof buf);
  printf("read %zd: %.*s\n", n, (int)n, buf);
  CHECK(close(fds[1]) == 0);
  printf("after close: read %zd\n", read(fds[0], buf, sizeof buf));
  SHOW("write to the read end", write(fds[0], "x", 1));
  SHOW("lseek", lseek(fds[0], 0, SEEK_SET));
  CHECK(close(fds[0]) == 0);
  int plain[2];
  CHECK(pipe(plain) == 0);
  printf("pipe: the lowest fds again %d, cloexec %d\n", plain[0] == fds[0],
         fcntl(plain[0], F_GETFD));
  SHOW("pipe2 with O_APPEND", pipe2(fds, O_APPEND));
  return 0;
}

// ---- threads ---------------------------------------------------------------------------------
enum { kStream = 1 << 20, kReverse = 256 << 10, kBounces = 2000 };

struct Stream {
  int fd;
  size_t bytes;
  uint64_t hash;
};

static void* StreamWriter(void* arg) {
  struct Stream* s = arg;
  static uint8_t chunk[8192];
  size_t sent = 0;
  for (size_t round = 0; sent < kStream; ++round) {
    size_t size = 1 + (round * 7919) % sizeof chunk;  // uneven chunks, up to 8 KiB
    if (size > kStream - sent) size = kStream - sent;
    for (size_t i = 0; i < size; ++i) chunk[i] = PatternByte(sent + i);
    WriteAll(s->fd, chunk, size);
    s->hash = Fnv(s->hash, chunk, size);
    sent += size;
  }
  s->bytes = sent;
  CHECK(close(s->fd) == 0);
  return NULL;
}

// Reads to end of file with blocking reads of `chunk` bytes, pausing `pause_ms` first.
static void* StreamReader(void* arg) {
  struct Stream* s = arg;
  static uint8_t buf[4096];
  SleepMs(50);  // the writer fills the pipe meanwhile and has to wait
  for (;;) {
    ssize_t n = read(s->fd, buf, 1000);
    if (n < 0 && errno == EINTR) continue;
    CHECK(n >= 0);
    if (n == 0) break;
    s->hash = Fnv(s->hash, buf, (size_t)n);
    s->bytes += (size_t)n;
  }
  return NULL;
}

struct Bounce {
  int in, out;
};
static void* Bouncer(void* arg) {
  struct Bounce* b = arg;
  uint8_t token;
  for (;;) {
    ssize_t n = read(b->in, &token, 1);
    if (n == 0) break;
    CHECK(n == 1);
    token = (uint8_t)(token + 1);
    CHECK(write(b->out, &token, 1) == 1);
  }
  return NULL;
}

static int Threads(void) {
  // A writer thread, the main thread reading.
  int fds[2];
  CHECK(pipe(fds) == 0);
  struct Stream sent = {fds[1], 0, kFnvStart};
  pthread_t writer;
  StartThread(&writer, StreamWriter, &sent);
  static uint8_t buf[65536];
  size_t got = 0;
  uint64_t hash = kFnvStart;
  int reads = 0;
  for (;;) {
    ssize_t n = read(fds[0], buf, 1 + (size_t)(reads++ * 4099) % sizeof buf);
    CHECK(n >= 0);
    if (n == 0) break;
    hash = Fnv(hash, buf, (size_t)n);
    got += (size_t)n;
  }
  CHECK(pthread_join(writer, NULL) == 0);
  close(fds[0]);
  printf("stream: sent %zu, received %zu, hashes %s\n", sent.bytes, got,
         sent.hash == hash ? "equal" : "DIFFER");

  // The main thread writing faster than a reader thread reads: the pipe fills up.
  CHECK(pipe(fds) == 0);
  struct Stream received = {fds[0], 0, kFnvStart};
  pthread_t reader;
  StartThread(&reader, StreamReader, &received);
  static uint8_t data[kReverse];
  for (size_t i = 0; i < kReverse; ++i) data[i] = PatternByte(i * 3);
  WriteAll(fds[1], data, kReverse);
  CHECK(close(fds[1]) == 0);
  CHECK(pthread_join(reader, NULL) == 0);
  close(fds[0]);
  printf("full pipe: wrote %d, reader got %zu, hashes %s\n", kReverse, received.bytes,
         received.hash == Fnv(kFnvStart, data, kReverse) ? "equal" : "DIFFER");

  // A token bounced between two threads, each waiting on its own pipe.
  int there[2], back[2];
  CHECK(pipe(there) == 0 && pipe(back) == 0);
  struct Bounce bounce = {there[0], back[1]};
  pthread_t bouncer;
  StartThread(&bouncer, Bouncer, &bounce);
  uint8_t token = 0;
  for (int i = 0; i < kBounces; ++i) {
    CHECK(write(there[1], &token, 1) == 1);
    CHECK(read(back[0], &token, 1) == 1);
    token = (uint8_t)(token + 1);
  }
  CHECK(close(there[1]) == 0);
  CHECK(pthread_join(bouncer, NULL) == 0);
  printf("bounced %d times, token %u\n", kBounces, token);
  return 0;
}

// ---- nonblock --------------------------------------------------------------------------------
static int NonBlock(void) {
  int fds[2];
  CHECK(pipe2(fds, O_NONBLOCK) == 0);
  printf("flags %#x %#x\n", fcntl(fds[0], F_GETFL), fcntl(fds[1], F_GETFL));
  char buf[4096];
  SHOW("empty read", read(fds[0], buf, sizeof buf));
  memset(buf, 'z', sizeof buf);
  size_t total = 0;
  for (;;) {
    ssize_t n = write(fds[1], buf, sizeof buf);
    if (n < 0) {
      printf("full after %zu bytes: %s\n", total, strerror(errno));
      break;
    }
    total += (size_t)n;
  }
  int queued = -1;
  CHECK(ioctl(fds[0], FIONREAD, &queued) == 0);
  printf("FIONREAD %d\n", queued);
  // The read end made blocking: there is data, so reads do not wait.
  CHECK(fcntl(fds[0], F_SETFL, 0) == 0);
  printf("read end flags now %#x\n", fcntl(fds[0], F_GETFL));
  size_t drained = 0;
  while (drained < total) {
    ssize_t n = read(fds[0], buf, sizeof buf);
    CHECK(n > 0);
    drained += (size_t)n;
  }
  printf("drained %zu\n", drained);
  CHECK(fcntl(fds[0], F_SETFL, O_NONBLOCK) == 0);
  printf("read end flags again %#x\n", fcntl(fds[0], F_GETFL));
  SHOW("empty read", read(fds[0], buf, sizeof buf));
  CHECK(close(fds[1]) == 0);
  printf("no writer: read %zd\n", read(fds[0], buf, sizeof buf));
  return 0;
}

// ---- eintr -----------------------------------------------------------------------------------
static volatile sig_atomic_t caught;
static void Caught(int signal) { caught = signal; }

struct Waiter {
  int fd;
  ssize_t result;
  int error;
  char data[16];
};
static void* WaitingReader(void* arg) {
  struct Waiter* w = arg;
  errno = 0;
  w->result = read(w->fd, w->data, sizeof w->data);
  w->error = errno;
  return NULL;
}

static void InterruptReader(int flags) {
  SetAction(SIGUSR1, Caught, flags);
  caught = 0;
  int fds[2];
  CHECK(pipe(fds) == 0);
  struct Waiter w = {fds[0], 0, 0, {0}};
  pthread_t reader;
  StartThread(&reader, WaitingReader, &w);
  SleepMs(50);  // the reader waits on the empty pipe
  CHECK(pthread_kill(reader, SIGUSR1) == 0);
  SleepMs(50);
  CHECK(write(fds[1], "late", 4) == 4);
  CHECK(pthread_join(reader, NULL) == 0);
  printf("%s: caught %d, read %zd (%s) %.*s\n", flags ? "SA_RESTART" : "no SA_RESTART", (int)caught,
         w.result, w.result < 0 ? strerror(w.error) : "ok", w.result > 0 ? (int)w.result : 0,
         w.data);
  close(fds[0]);
  close(fds[1]);
}

static int Eintr(void) {
  InterruptReader(0);
  InterruptReader(SA_RESTART);
  // A lone thread's read, ended by its interval timer.
  SetAction(SIGALRM, Caught, 0);
  caught = 0;
  int fds[2];
  CHECK(pipe(fds) == 0);
  struct itimerval timer = {{0, 0}, {0, 50000}};
  CHECK(setitimer(ITIMER_REAL, &timer, NULL) == 0);
  char buf[8];
  SHOW("alarm: read", read(fds[0], buf, sizeof buf));
  printf("alarm: caught %d\n", (int)caught);
  return 0;
}

// ---- sigpipe ---------------------------------------------------------------------------------
static volatile sig_atomic_t pipe_signo, pipe_code, pipe_from_self;
static void OnSigpipe(int signal, siginfo_t* info, void* context) {
  (void)context;
  pipe_signo = signal;
  pipe_code = info->si_code;
  pipe_from_self = info->si_pid == getpid();
}

// A pipe whose read end is closed: its write end.
static int Widowed(void) {
  int fds[2];
  CHECK(pipe(fds) == 0);
  CHECK(close(fds[0]) == 0);
  return fds[1];
}

static int Sigpipe(void) {
  int fd = Widowed();
  signal(SIGPIPE, SIG_IGN);
  SHOW("ignored: write", write(fd, "x", 1));

  // Blocked: pending for the thread until it is ignored (which discards it).
  sigset_t set, pending;
  sigemptyset(&set);
  sigaddset(&set, SIGPIPE);
  signal(SIGPIPE, SIG_DFL);
  CHECK(sigprocmask(SIG_BLOCK, &set, NULL) == 0);
  SHOW("blocked: write", write(fd, "x", 1));
  CHECK(sigpending(&pending) == 0);
  printf("blocked: pending %d\n", sigismember(&pending, SIGPIPE));
  signal(SIGPIPE, SIG_IGN);
  CHECK(sigpending(&pending) == 0);
  printf("ignored since: pending %d\n", sigismember(&pending, SIGPIPE));
  CHECK(sigprocmask(SIG_UNBLOCK, &set, NULL) == 0);

  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_sigaction = OnSigpipe;
  action.sa_flags = SA_SIGINFO | SA_RESTART;  // EPIPE is no interruption: never made again
  sigemptyset(&action.sa_mask);
  CHECK(sigaction(SIGPIPE, &action, NULL) == 0);
  struct iovec iov[2] = {{"ab", 2}, {"cd", 2}};
  SHOW("caught: writev", writev(fd, iov, 2));
  printf("handler: signal %d, code %d (SI_USER %d), from itself %d\n", (int)pipe_signo,
         (int)pipe_code, SI_USER, (int)pipe_from_self);
  close(fd);
  return 0;
}

static int SigpipeDefault(void) {
  int fd = Widowed();
  signal(SIGPIPE, SIG_DFL);
  printf("writing with SIGPIPE at its default\n");
  fflush(stdout);
  ssize_t n = write(fd, "x", 1);
  printf("still alive: write %zd\n", n);
  return 1;
}

// ---- dup -------------------------------------------------------------------------------------
static int Dup(void) {
  int fds[2];
  CHECK(pipe(fds) == 0);
  printf("dup2 -> %d\n", dup2(fds[1], 10));
  printf("dup3 -> %d\n", dup3(fds[0], 11, O_CLOEXEC));
  int copy = fcntl(fds[1], F_DUPFD_CLOEXEC, 20);
  printf("F_DUPFD_CLOEXEC -> %d\n", copy);
  printf("cloexec: 10 %d, 11 %d, %d %d\n", fcntl(10, F_GETFD), fcntl(11, F_GETFD), copy,
         fcntl(copy, F_GETFD));
  CHECK(fcntl(11, F_SETFD, 0) == 0);
  CHECK(fcntl(10, F_SETFD, FD_CLOEXEC) == 0);
  printf("flipped: 10 %d, 11 %d\n", fcntl(10, F_GETFD), fcntl(11, F_GETFD));
  SHOW("dup3 onto itself", dup3(10, 10, 0));
  CHECK(close(fds[1]) == 0);
  CHECK(write(10, "via 10,", 7) == 7);
  CHECK(write(copy, " via copy", 9) == 9);
  char buf[64];
  ssize_t n = read(11, buf, sizeof buf);
  printf("read via 11: %.*s\n", (int)n, buf);
  CHECK(close(10) == 0);
  // One write end left (copy): the reader would still wait, so it is not read now.
  int queued = -1;
  CHECK(ioctl(fds[0], FIONREAD, &queued) == 0);
  printf("queued %d\n", queued);
  CHECK(close(copy) == 0);
  printf("every writer closed: read %zd\n", read(fds[0], buf, sizeof buf));
  CHECK(close(11) == 0);
  printf("read end still open through fds[0]: read %zd\n", read(fds[0], buf, sizeof buf));
  CHECK(close(fds[0]) == 0);
  SHOW("closed: read", read(fds[0], buf, sizeof buf));
  return 0;
}

// ---- whole ------------------------------------------------------------------------------------

static volatile sig_atomic_t ticks;
static void OnTick(int signal) {
  (void)signal;
  ++ticks;
}

// SIGALRM every 20 ms until Disarm(): whichever comes after the write has blocked ends it.
static void ArmTicks(int flags) {
  SetAction(SIGALRM, OnTick, flags);
  struct itimerval every = {{0, 20000}, {0, 20000}};
  CHECK(setitimer(ITIMER_REAL, &every, NULL) == 0);
}

static void Disarm(void) {
  struct itimerval off = {{0, 0}, {0, 0}};
  CHECK(setitimer(ITIMER_REAL, &off, NULL) == 0);
}

static int Whole(void) {
  enum { kSize = 1 << 20 };
  static uint8_t data[kSize];
  for (size_t i = 0; i < kSize; ++i) data[i] = PatternByte(i);
  int fds[2];
  CHECK(pipe(fds) == 0);
  struct Stream received = {fds[0], 0, kFnvStart};
  pthread_t reader;
  StartThread(&reader, StreamReader, &received);  // 1000 bytes at a time, after 50 ms
  SHOW("one write", write(fds[1], data, kSize));
  struct iovec halves[2] = {{data, kSize / 2}, {data + kSize / 2, kSize / 2}};
  SHOW("one writev", writev(fds[1], halves, 2));
  CHECK(close(fds[1]) == 0);
  CHECK(pthread_join(reader, NULL) == 0);
  close(fds[0]);
  const uint64_t sent = Fnv(Fnv(kFnvStart, data, kSize), data, kSize);
  printf("reader got %zu, hashes %s\n", received.bytes, received.hash == sent ? "equal" : "DIFFER");

  // Nobody reads: the pipe fills, the write waits, a signal ends it with what it wrote.
  CHECK(pipe(fds) == 0);
  ArmTicks(SA_RESTART);  // not made again: part of it was written
  ssize_t n = write(fds[1], data, kSize);
  Disarm();
  printf("interrupted write: partial %s, handler ran %s\n", n > 0 && n < kSize ? "yes" : "no",
         ticks > 0 ? "yes" : "no");
  int queued = 0;
  CHECK(ioctl(fds[0], FIONREAD, &queued) == 0);
  printf("the pipe holds what it said: %s\n", queued == n ? "yes" : "no");
  // The pipe is full: a write that writes nothing before the signal fails with EINTR.
  ArmTicks(0);
  SHOW("interrupted before a byte", write(fds[1], data, 10));
  Disarm();
  close(fds[0]);
  close(fds[1]);
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: pipes SCENARIO\n");
    return 2;
  }
  signal(SIGPIPE, SIG_DFL);
  const char* s = argv[1];
  if (strcmp(s, "basic") == 0) return Basic();
  if (strcmp(s, "threads") == 0) return Threads();
  if (strcmp(s, "nonblock") == 0) return NonBlock();
  if (strcmp(s, "eintr") == 0) return Eintr();
  if (strcmp(s, "sigpipe") == 0) return Sigpipe();
  if (strcmp(s, "sigpipe-default") == 0) return SigpipeDefault();
  if (strcmp(s, "dup") == 0) return Dup();
  if (strcmp(s, "whole") == 0) return Whole();
  fprintf(stderr, "pipes: unknown scenario %s\n", s);
  return 2;
}
