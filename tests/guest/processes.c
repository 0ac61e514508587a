// Processes inside one VM: fork, vfork, wait4/waitid, exit statuses, signals between
// processes, process groups and sessions, copy-on-write memory, fork of a multi-threaded
// process. Run as `processes SCENARIO`; the output (no pids: they differ from a native run) and
// the exit status must be those of the same program run natively
// (tests/integration/processes_test.cc).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

// Unbuffered, one write per line: parent and child share stdout.
static void say(const char* format, ...) {
  char line[256];
  va_list args;
  va_start(args, format);
  int n = vsnprintf(line, sizeof line, format, args);
  va_end(args);
  if (write(1, line, (size_t)n) != n) _exit(99);
}

static void describe(const char* who, int status) {
  if (WIFEXITED(status)) {
    say("%s: exited %d\n", who, WEXITSTATUS(status));
  } else if (WIFSIGNALED(status)) {
    say("%s: killed by signal %d\n", who, WTERMSIG(status));
  } else {
    say("%s: status %#x\n", who, status);
  }
}

static int fork_basic(void) {
  const pid_t parent = getpid();
  pid_t child = fork();
  if (child < 0) return 1;
  if (child == 0) {
    say("child: parent is %s, own pid %s\n", getppid() == parent ? "right" : "wrong",
        getpid() != parent ? "new" : "same");
    _exit(7);
  }
  int status = 0;
  if (waitpid(child, &status, 0) != child) return 2;
  describe("parent", status);
  errno = 0;
  int again = (int)waitpid(child, &status, 0);
  say("again: %d errno %s\n", again, errno == ECHILD ? "ECHILD" : "?");
  return 0;
}

static void on_usr1(int signal);

// SIGUSR1 runs on_usr1 and is blocked (until a sigsuspend on *old, the mask before).
static void catch_usr1_blocked(sigset_t* old) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = on_usr1;
  sigaction(SIGUSR1, &action, NULL);
  sigset_t usr1;
  sigemptyset(&usr1);
  sigaddset(&usr1, SIGUSR1);
  sigprocmask(SIG_BLOCK, &usr1, old);
}

static int wait_many(void) {
  enum { kChildren = 12 };
  pid_t pids[kChildren];
  // Each child waits for the parent's SIGUSR1, so none can end before the WNOHANG check.
  sigset_t old;
  catch_usr1_blocked(&old);
  for (int i = 0; i < kChildren; ++i) {
    pids[i] = fork();
    if (pids[i] < 0) return 1;
    if (pids[i] == 0) {
      sigsuspend(&old);
      _exit(10 + i);
    }
  }
  int status = 0;
  say("nohang: %d\n", (int)waitpid(-1, &status, WNOHANG));
  for (int i = kChildren - 1; i >= 0; --i) kill(pids[i], SIGUSR1);
  int seen[kChildren] = {0};
  for (int n = 0; n < kChildren; ++n) {
    pid_t pid = wait(&status);
    for (int i = 0; i < kChildren; ++i) {
      if (pids[i] == pid && WIFEXITED(status)) seen[i] = WEXITSTATUS(status);
    }
  }
  for (int i = 0; i < kChildren; ++i) say("child %d: %d\n", i, seen[i]);
  errno = 0;
  int then = (int)wait(&status);
  say("then: %d %s\n", then, errno == ECHILD ? "ECHILD" : "?");
  // waitid: P_PID, WNOWAIT leaves it to be reaped again.
  pid_t child = fork();
  if (child == 0) _exit(3);
  siginfo_t info;
  memset(&info, 0, sizeof info);
  if (waitid(P_PID, (id_t)child, &info, WEXITED | WNOWAIT) != 0) return 2;
  say("waitid: code %s status %d pid %s\n", info.si_code == CLD_EXITED ? "CLD_EXITED" : "?",
      info.si_status, info.si_pid == child ? "right" : "wrong");
  if (waitid(P_ALL, 0, &info, WEXITED) != 0) return 3;
  say("waitid again: %d\n", info.si_status);
  return 0;
}

static volatile sig_atomic_t got_usr1;
static void on_usr1(int signal) {
  (void)signal;
  got_usr1 = 1;
}

static int signals(void) {
  // A child killed by the parent's SIGTERM; the child tells the parent it is ready with SIGUSR1.
  sigset_t old;
  catch_usr1_blocked(&old);
  const pid_t parent = getpid();
  pid_t child = fork();
  if (child == 0) {
    kill(parent, SIGUSR1);
    for (;;) pause();
  }
  while (!got_usr1) sigsuspend(&old);
  say("parent: child is ready\n");
  kill(child, SIGTERM);
  int status = 0;
  waitpid(child, &status, 0);
  describe("child", status);
  // A child that computes without making a syscall is reached too.
  child = fork();
  if (child == 0) {
    for (volatile unsigned long spin = 0;; ++spin) {
    }
  }
  kill(child, SIGTERM);
  waitpid(child, &status, 0);
  describe("spinning child", status);
  // A child that ends itself with a signal, and one that faults.
  child = fork();
  if (child == 0) {
    raise(SIGABRT);
    _exit(0);
  }
  waitpid(child, &status, 0);
  describe("abort", WIFSIGNALED(status) ? WTERMSIG(status) : status);
  child = fork();
  if (child == 0) {
    signal(SIGSEGV, SIG_DFL);
    volatile int* volatile bad = (int*)8;
    *bad = 1;
    _exit(0);
  }
  waitpid(child, &status, 0);
  say("segv: %s %d\n", WIFSIGNALED(status) ? "signaled" : "exited",
      WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
  errno = 0;
  int killed = kill(child, SIGTERM);
  say("kill nobody: %d %s\n", killed, errno == ESRCH ? "ESRCH" : "?");
  return 0;
}

static volatile sig_atomic_t chld_count;
static void on_chld(int signal) {
  (void)signal;
  ++chld_count;
}

static int sigchld(void) {
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = on_chld;
  action.sa_flags = SA_RESTART;
  sigaction(SIGCHLD, &action, NULL);
  sigset_t chld, old;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, &old);
  pid_t child = fork();
  if (child == 0) _exit(0);
  while (chld_count == 0) sigsuspend(&old);
  say("SIGCHLD: %d\n", (int)chld_count);
  int status = 0;
  say("reaped: %s\n", waitpid(child, &status, 0) == child ? "yes" : "no");
  return 0;
}

static int groups(void) {
  int ready[2];
  pid_t child = fork();
  (void)ready;
  if (child == 0) {
    if (setpgid(0, 0) != 0) _exit(1);
    if (getpgrp() != getpid()) _exit(2);
    errno = 0;
    if (setsid() != -1 || errno != EPERM) _exit(3);  // a group leader
    pid_t grandchild = fork();
    if (grandchild == 0) {
      if (getpgrp() != getppid()) _exit(4);
      if (setsid() != getpid()) _exit(5);
      if (getsid(0) != getpid() || getpgrp() != getpid()) _exit(6);
      _exit(0);
    }
    int status = 0;
    waitpid(grandchild, &status, 0);
    _exit(WIFEXITED(status) ? WEXITSTATUS(status) : 100);
  }
  int status = 0;
  waitpid(child, &status, 0);
  describe("child", status);
  // kill(-group): every member of a group.
  child = fork();
  if (child == 0) {
    setpgid(0, 0);
    if (fork() == 0) {
      for (;;) pause();
    }
    for (;;) pause();
  }
  setpgid(child, child);  // as shells do, from both sides
  while (getpgid(child) != child) usleep(1000);
  usleep(20000);  // the grandchild is forked
  kill(-child, SIGKILL);
  waitpid(child, &status, 0);
  describe("group leader", status);
  errno = 0;
  int stranger = setpgid(1234567, 0);
  say("setpgid of a stranger: %d %s\n", stranger, errno == ESRCH ? "ESRCH" : "?");
  return 0;
}

static int memory_copy(void) {
  static int shared_value = 1;
  char* heap = malloc(1 << 20);
  memset(heap, 'p', 1 << 20);
  pid_t child = fork();
  if (child == 0) {
    shared_value = 2;
    memset(heap, 'c', 1 << 20);
    _exit(shared_value + (heap[12345] == 'c' ? 10 : 0));
  }
  int status = 0;
  waitpid(child, &status, 0);
  describe("child", status);
  say("parent sees value %d and heap '%c'\n", shared_value, heap[12345]);
  return 0;
}

static int vfork_exit(void) {
  pid_t child = vfork();
  if (child == 0) _exit(5);
  int status = 0;
  waitpid(child, &status, 0);
  describe("vfork child", status);
  return 0;
}

static void* spinner(void* arg) {
  (void)arg;
  for (;;) pause();
  return NULL;
}
static void* add_one(void* arg) {
  *(int*)arg += 1;
  return NULL;
}

static int threads(void) {
  pthread_t other;
  pthread_create(&other, NULL, spinner, NULL);
  pid_t child = fork();
  if (child == 0) {
    // Only the forking thread is in the child; it can make threads of its own.
    int value = 41;
    pthread_t t;
    if (pthread_create(&t, NULL, add_one, &value) != 0) _exit(1);
    pthread_join(t, NULL);
    _exit(value);
  }
  int status = 0;
  waitpid(child, &status, 0);
  describe("child", status);
  return 0;
}

static int many(void) {
  // Forks in waves, each child forking one of its own.
  int total = 0;
  for (int wave = 0; wave < 4; ++wave) {
    pid_t pids[8];
    for (int i = 0; i < 8; ++i) {
      pids[i] = fork();
      if (pids[i] == 0) {
        pid_t inner = fork();
        if (inner == 0) _exit(1);
        int status = 0;
        waitpid(inner, &status, 0);
        _exit(1 + WEXITSTATUS(status));
      }
    }
    for (int i = 0; i < 8; ++i) {
      int status = 0;
      waitpid(pids[i], &status, 0);
      total += WEXITSTATUS(status);
    }
  }
  say("total %d\n", total);
  return 0;
}

static int exit_code(void) {
  pid_t child = fork();
  if (child == 0) {
    pid_t inner = fork();
    if (inner == 0) exit(3);
    int status = 0;
    waitpid(inner, &status, 0);
    exit(WEXITSTATUS(status) * 2);
  }
  int status = 0;
  waitpid(child, &status, 0);
  return WEXITSTATUS(status) * 3;  // 18
}

// Run by execve: says what the new program inherited.
static int exec_child(int argc, char** argv) {
  say("exec-child: argc %d argv[0] %s argv[2] %s FOO=%s\n", argc, argv[0], argc > 2 ? argv[2] : "-",
      getenv("FOO") ? getenv("FOO") : "(unset)");
  say("exec-child: fd 10 %s, fd 11 %s\n", fcntl(10, F_GETFD) < 0 ? "closed" : "open",
      fcntl(11, F_GETFD) < 0 ? "closed" : "open");
  struct sigaction usr1, usr2;
  sigaction(SIGUSR1, NULL, &usr1);
  sigaction(SIGUSR2, NULL, &usr2);
  sigset_t mask;
  sigprocmask(SIG_BLOCK, NULL, &mask);
  say("exec-child: SIGUSR1 %s, SIGUSR2 %s, SIGHUP %s\n",
      usr1.sa_handler == SIG_DFL ? "default" : "?", usr2.sa_handler == SIG_IGN ? "ignored" : "?",
      sigismember(&mask, SIGHUP) ? "blocked" : "unblocked");
  say("exec-child: tid is pid: %s\n", syscall(SYS_gettid) == getpid() ? "yes" : "no");
  return 23;
}

static char* exec_argv[] = {"renamed", "exec-child", "hello", NULL};
static char* exec_envp[] = {"FOO=bar", NULL};

static void* exec_from_thread(void* arg) {
  (void)arg;
  execve("/proc/self/exe", exec_argv, exec_envp);
  _exit(98);
}

static int exec_scenario(void) {
  errno = 0;
  int missing = execve("/no/such/program", exec_argv, exec_envp);
  say("missing: %d %s\n", missing, errno == ENOENT ? "ENOENT" : strerror(errno));
  struct sigaction action;
  memset(&action, 0, sizeof action);
  action.sa_handler = on_usr1;
  sigaction(SIGUSR1, &action, NULL);
  signal(SIGUSR2, SIG_IGN);
  sigset_t hup;
  sigemptyset(&hup);
  sigaddset(&hup, SIGHUP);
  sigprocmask(SIG_BLOCK, &hup, NULL);
  if (dup2(1, 10) != 10 || fcntl(10, F_SETFD, FD_CLOEXEC) != 0 || dup2(1, 11) != 11) return 1;
  pid_t child = fork();
  if (child == 0) {
    execve("/proc/self/exe", exec_argv, exec_envp);
    _exit(97);
  }
  int status = 0;
  waitpid(child, &status, 0);
  describe("exec", status);
  // From a second thread: the other threads go, the caller becomes the process's only one.
  child = fork();
  if (child == 0) {
    pthread_t t;
    pthread_create(&t, NULL, exec_from_thread, NULL);
    for (;;) pause();
  }
  waitpid(child, &status, 0);
  describe("exec from a thread", status);
  return 0;
}

int main(int argc, char** argv) {
  const char* scenario = argc > 1 ? argv[1] : "fork";
  if (strcmp(scenario, "exec-child") == 0) return exec_child(argc, argv);
  if (strcmp(scenario, "exec") == 0) return exec_scenario();
  if (strcmp(scenario, "fork") == 0) return fork_basic();
  if (strcmp(scenario, "wait") == 0) return wait_many();
  if (strcmp(scenario, "signals") == 0) return signals();
  if (strcmp(scenario, "sigchld") == 0) return sigchld();
  if (strcmp(scenario, "groups") == 0) return groups();
  if (strcmp(scenario, "memory") == 0) return memory_copy();
  if (strcmp(scenario, "vfork") == 0) return vfork_exit();
  if (strcmp(scenario, "threads") == 0) return threads();
  if (strcmp(scenario, "many") == 0) return many();
  if (strcmp(scenario, "exit") == 0) return exit_code();
  fprintf(stderr, "unknown scenario %s\n", scenario);
  return 2;
}
