// fork_pipes: pipes across sf_clone. A clone's pipes are its own copies of the parent's as they
// stood at the clone instant: the bytes written and not yet read are there, and both ends are
// connected to each other (what the clone writes it reads back), not to the parent's pipe. A
// pipe whose read end the VM had closed fails writes with EPIPE (and SIGPIPE); one whose write
// end it had closed reads its bytes, then end of file. The parent's pipes are untouched.
// Output (parent only):
//   clone N: status 0        (per clone; bits: 1 the bytes were not there, 2 a write did not
//                             come back, 4 write without a reader not EPIPE + one SIGPIPE,
//                             8 no end of file after the bytes, 16 a pipe end's flags changed)
//   parent read: before
//   parent read: after
//   parent read: kept
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <flurry/sf.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static volatile sig_atomic_t sigpipes;
static void OnSigpipe(int signal) {
  (void)signal;
  ++sigpipes;
}

static int ReadIs(int fd, const char* expected) {
  char buf[32] = {0};
  ssize_t got = read(fd, buf, sizeof buf - 1);
  return got == (ssize_t)strlen(expected) && memcmp(buf, expected, (size_t)got) == 0;
}

int main(void) {
  signal(SIGPIPE, OnSigpipe);
  int fds[2], no_reader[2], no_writer[2];
  if (pipe2(fds, O_NONBLOCK) != 0 || pipe(no_reader) != 0 || pipe(no_writer) != 0) return 1;
  if (write(fds[1], "before", 6) != 6) return 1;
  if (write(no_writer[1], "kept", 4) != 4) return 1;
  close(no_reader[0]);
  close(no_writer[1]);
  sf_ticket_t t = sf_request_ticket(2);
  int id = sf_clone(t);
  if (id > 0) {
    int status = 0;
    char mine[16];
    int length = snprintf(mine, sizeof mine, "clone %d", id);
    if (!ReadIs(fds[0], "before")) status |= 1;
    if (write(fds[1], mine, (size_t)length) != length || !ReadIs(fds[0], mine)) status |= 2;
    errno = 0;
    if (write(no_reader[1], "x", 1) != -1 || errno != EPIPE || sigpipes != 1) status |= 4;
    if (!ReadIs(no_writer[0], "kept") || read(no_writer[0], mine, 1) != 0) status |= 8;
    if (fcntl(fds[1], F_GETFL) != (O_WRONLY | O_NONBLOCK)) status |= 16;
    if (fcntl(no_writer[0], F_GETFL) != O_RDONLY) status |= 16;
    sf_exit_with(status, NULL, 0);
  }
  struct sf_outcome o[2];
  memset(o, 0, sizeof o);
  int n = sf_join(t, o, 2);
  for (int i = 0; i < n; ++i) printf("clone %d: status %d\n", o[i].id, o[i].status);
  char buf[16] = {0};
  ssize_t got = read(fds[0], buf, sizeof buf - 1);
  printf("parent read: %.*s\n", got > 0 ? (int)got : 0, buf);
  if (write(fds[1], "after", 5) != 5) return 1;
  memset(buf, 0, sizeof buf);
  got = read(fds[0], buf, sizeof buf - 1);
  printf("parent read: %.*s\n", got > 0 ? (int)got : 0, buf);
  memset(buf, 0, sizeof buf);
  got = read(no_writer[0], buf, sizeof buf - 1);
  printf("parent read: %.*s\n", got > 0 ? (int)got : 0, buf);
  return sigpipes == 0 ? 0 : 1;
}
