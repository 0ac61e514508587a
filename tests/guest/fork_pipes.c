// fork_pipes: pipe ends across sf_clone. A pipe cannot follow the VM into another process: a
// clone gets each end as that end of a new pipe without a peer, so its reads see end of file
// and its writes fail with EPIPE (and raise SIGPIPE). The parent's pipe is untouched: what it
// wrote before sf_clone is still there for it to read. Output (parent only):
//   clone N: status 0        (per clone; bits: 1 read not at end of file, 2 write not EPIPE,
//                             4 no SIGPIPE, 8 a pipe end's flags changed)
//   parent read: before
//   parent read: after
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

int main(void) {
  signal(SIGPIPE, OnSigpipe);
  int fds[2];
  if (pipe2(fds, O_NONBLOCK) != 0) return 1;
  if (write(fds[1], "before", 6) != 6) return 1;
  sf_ticket_t t = sf_request_ticket(2);
  int id = sf_clone(t);
  if (id > 0) {
    int status = 0;
    char buf[16];
    if (fcntl(fds[0], F_SETFL, 0) != 0) status |= 8;  // blocking: end of file must not wait
    if (read(fds[0], buf, sizeof buf) != 0) status |= 1;
    errno = 0;
    if (write(fds[1], "x", 1) != -1 || errno != EPIPE) status |= 2;
    if (sigpipes != 1) status |= 4;
    if (fcntl(fds[1], F_GETFL) != (O_WRONLY | O_NONBLOCK)) status |= 8;
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
  return sigpipes == 0 ? 0 : 1;
}
