// processes_reap: children that leave no zombies, and waits by process group, one scenario per
// run (argv[1]); tests/integration/processes_test.cc compares the output with a native run.
//
//   ignore     SIGCHLD set to SIG_IGN: ended children are gone at once; a wait waits for the
//              running ones, then fails with ECHILD; SIG_DFL again brings zombies back
//   nocldwait  SA_NOCLDWAIT with a handler: no zombies, and the handler still runs
//   pgid       waitid(P_PGID) of the caller's group (id 0), of another group, of group 1
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "guest_check.h"

// A child that sleeps `ms` and exits with `code`.
static pid_t Child(int ms, int code) {
  pid_t pid = fork();
  if (pid < 0) {
    printf("fork: %s\n", strerror(errno));
    exit(98);
  }
  if (pid == 0) {
    SleepMs(ms);
    _exit(code);
  }
  return pid;
}

// wait(), its result described without pids (they differ from a native run).
static void Wait(const char* label) {
  int status = 0;
  errno = 0;
  pid_t got = wait(&status);
  if (got < 0) {
    printf("%s: -1 (%s)\n", label, strerror(errno));
  } else {
    printf("%s: a child, status %d\n", label, WEXITSTATUS(status));
  }
}

static int Ignore(void) {
  signal(SIGCHLD, SIG_IGN);
  for (int i = 0; i < 3; ++i) Child(0, i + 1);
  SleepMs(100);  // they have ended: no zombies to reap
  Wait("after three ended");
  Child(60, 4);  // running: the wait waits for it, then finds nothing to report
  Wait("with one running");
  signal(SIGCHLD, SIG_DFL);
  Child(0, 5);
  Wait("SIG_DFL again");
  return 0;
}

static volatile sig_atomic_t handled;
static void OnChld(int signal) {
  (void)signal;
  ++handled;
}

static int NoCldWait(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = OnChld;
  sa.sa_flags = SA_NOCLDWAIT | SA_RESTART;
  sigaction(SIGCHLD, &sa, NULL);
  Child(0, 7);
  SleepMs(100);
  printf("handler ran: %s\n", handled > 0 ? "yes" : "no");
  Wait("after it ended");
  return 0;
}

static void Waitid(const char* label, idtype_t type, id_t id) {
  siginfo_t info;
  memset(&info, 0, sizeof info);
  errno = 0;
  int r = waitid(type, id, &info, WEXITED);
  if (r < 0) {
    printf("%s: -1 (%s)\n", label, strerror(errno));
  } else {
    printf("%s: status %d\n", label, info.si_status);
  }
}

static int Pgid(void) {
  setpgid(0, 0);  // a group of our own (natively we may be in the shell's)
  pid_t other = fork();
  if (other == 0) {
    setpgid(0, 0);
    SleepMs(60);
    _exit(9);
  }
  setpgid(other, other);  // either side may do it first
  Child(0, 8);            // in our group
  Waitid("group 1", P_PGID, 1);
  Waitid("own group", P_PGID, 0);
  Waitid("own group again", P_PGID, 0);
  Waitid("the other group", P_PGID, (id_t)other);
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const char* scenario = argc > 1 ? argv[1] : "";
  if (strcmp(scenario, "ignore") == 0) return Ignore();
  if (strcmp(scenario, "nocldwait") == 0) return NoCldWait();
  if (strcmp(scenario, "pgid") == 0) return Pgid();
  printf("usage: processes_reap ignore|nocldwait|pgid\n");
  return 2;
}
