// posix_timers: argv[1] names a scenario of POSIX timers (timer_create and friends); the output
// is the same natively and in flurry (tests/integration/signals_test.cc compares them). Nothing
// printed depends on how fast the host is: waits are for events, and counts are bounded below.
//   signal    SIGEV_SIGNAL to an SA_SIGINFO handler: si_code SI_TIMER, si_value, si_timerid;
//             a null sigevent: SIGALRM whose si_value is the timer's id
//   periodic  a 10 ms periodic timer: five ticks, then disarmed (gettime reports zero)
//   abstime   TIMER_ABSTIME on CLOCK_MONOTONIC: fires at or after the deadline; old_value
//   thread    SIGEV_THREAD_ID to one thread, which takes it with sigwaitinfo; a tid that is no
//             thread of the process is EINVAL
//   sigev_thread  glibc's SIGEV_THREAD: a periodic timer's callback runs three times
//   none      SIGEV_NONE: no signal, timer_gettime counts down (one-shot and periodic)
//   overrun   a 5 ms timer whose signal stays blocked 60 ms: one signal, si_overrun counts the
//             periods missed, timer_getoverrun agrees
//   delete    timer_delete stops a periodic timer; the id is then EINVAL
//   fork      a fork child has no timers; the parent's stays armed
//   exec      execve deletes the timers (and their pending signals); alarm() survives it
//   errors    bad clocks, sigevents, settings and ids
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

static volatile sig_atomic_t g_fired;
static volatile int g_code, g_timerid, g_signo;
static volatile intptr_t g_value;

static void OnTimer(int sig, siginfo_t* info, void* uc) {
  (void)uc;
  g_signo = sig;
  g_code = info->si_code;
  g_timerid = info->si_timerid;
  g_value = (intptr_t)info->si_value.sival_ptr;
  ++g_fired;
}

static void Install(int sig) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnTimer;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (sigaction(sig, &sa, NULL) != 0) {
    perror("sigaction");
    exit(2);
  }
}

static void Block(int sig, int how) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  pthread_sigmask(how, &set, NULL);
}

// Waits (sigsuspend with `sig` open) until the handler has run `count` times in all.
static void WaitFired(int sig, int count) {
  sigset_t open;
  pthread_sigmask(SIG_BLOCK, NULL, &open);
  sigdelset(&open, sig);
  Block(sig, SIG_BLOCK);
  while (g_fired < count) sigsuspend(&open);
  Block(sig, SIG_UNBLOCK);
}

static void Check(int ok, const char* what) {
  if (!ok) {
    printf("FAILED: %s (errno %d)\n", what, errno);
    exit(1);
  }
}

// A CLOCK_MONOTONIC timer that raises `signo` for the process, with `value` as si_value.
static timer_t SignalTimer(int signo, int value) {
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = signo;
  ev.sigev_value.sival_int = value;
  timer_t t;
  Check(timer_create(CLOCK_MONOTONIC, &ev, &t) == 0, "timer_create");
  return t;
}

static struct itimerspec Spec(long value_ns, long interval_ns) {
  struct itimerspec s;
  s.it_value.tv_sec = value_ns / 1000000000;
  s.it_value.tv_nsec = value_ns % 1000000000;
  s.it_interval.tv_sec = interval_ns / 1000000000;
  s.it_interval.tv_nsec = interval_ns % 1000000000;
  return s;
}

static long Ns(const struct timespec* t) { return t->tv_sec * 1000000000L + t->tv_nsec; }

static int Signal(void) {
  const int sig = SIGRTMIN + 1;
  Install(sig);
  timer_t t = SignalTimer(sig, 1234);
  struct itimerspec s = Spec(20000000, 0);
  Check(timer_settime(t, 0, &s, NULL) == 0, "timer_settime");
  WaitFired(sig, 1);
  printf(
      "signal %d (SIGRTMIN+1 %d), si_code %d (SI_TIMER %d), si_value %ld, si_timerid is "
      "the id %d\n",
      g_signo, g_signo == sig, g_code, g_code == SI_TIMER, (long)g_value,
      g_timerid == (int)(intptr_t)t);
  struct itimerspec left;
  Check(timer_gettime(t, &left) == 0, "timer_gettime");
  printf("after firing: %ld ns left\n", Ns(&left.it_value));
  Check(timer_delete(t) == 0, "timer_delete");

  // A null sigevent (the syscall's: glibc's timer_create passes one of its own): SIGALRM,
  // with the id as its value.
  Install(SIGALRM);
  g_fired = 0;
  int u = -1;
  Check(syscall(SYS_timer_create, CLOCK_REALTIME, NULL, &u) == 0, "timer_create(NULL)");
  Check(syscall(SYS_timer_settime, u, 0, &s, NULL) == 0, "timer_settime");
  WaitFired(SIGALRM, 1);
  printf("null sigevent: SIGALRM %d, si_code SI_TIMER %d, si_value is the id %d\n",
         g_signo == SIGALRM, g_code == SI_TIMER, g_value == u && g_timerid == u);
  return 0;
}

static int Periodic(void) {
  Install(SIGUSR1);
  timer_t t = SignalTimer(SIGUSR1, 0);
  struct itimerspec s = Spec(10000000, 10000000);
  Check(timer_settime(t, 0, &s, NULL) == 0, "timer_settime");
  WaitFired(SIGUSR1, 5);
  struct itimerspec left;
  Check(timer_gettime(t, &left) == 0, "timer_gettime");
  printf("ticks >= 5: %d; interval %ld ns, next in (0, 10 ms]: %d\n", g_fired >= 5,
         Ns(&left.it_interval), Ns(&left.it_value) > 0 && Ns(&left.it_value) <= 10000000);
  struct itimerspec off = Spec(0, 0), old;
  Check(timer_settime(t, 0, &off, &old) == 0, "timer_settime(0)");
  printf("old interval %ld ns\n", Ns(&old.it_interval));
  Check(timer_gettime(t, &left) == 0, "timer_gettime");
  printf("disarmed: value %ld ns, interval %ld ns\n", Ns(&left.it_value), Ns(&left.it_interval));
  return 0;
}

static int Abstime(void) {
  Install(SIGUSR2);
  timer_t t = SignalTimer(SIGUSR2, 0);
  struct timespec now;
  clock_gettime(CLOCK_MONOTONIC, &now);
  const long deadline = Ns(&now) + 30000000;
  struct itimerspec s = Spec(deadline, 0), old;
  Check(timer_settime(t, TIMER_ABSTIME, &s, &old) == 0, "timer_settime");
  printf("old value %ld ns (none armed)\n", Ns(&old.it_value));
  struct itimerspec left;
  Check(timer_gettime(t, &left) == 0, "timer_gettime");
  printf("left at most 30 ms: %d\n", Ns(&left.it_value) <= 30000000);
  WaitFired(SIGUSR2, 1);
  clock_gettime(CLOCK_MONOTONIC, &now);
  printf("fired at or after the deadline: %d\n", Ns(&now) >= deadline);
  // A deadline already passed fires at once.
  s = Spec(1, 0);
  Check(timer_settime(t, TIMER_ABSTIME, &s, NULL) == 0, "timer_settime(past)");
  WaitFired(SIGUSR2, 2);
  printf("a past deadline fired: %d\n", g_fired == 2);
  return 0;
}

static volatile pid_t g_waiter_tid;
static sem_t g_ready;

static void* Waiter(void* arg) {
  (void)arg;
  g_waiter_tid = gettid();
  sem_post(&g_ready);
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGRTMIN + 2);
  siginfo_t info;
  const int sig = sigwaitinfo(&set, &info);
  printf("waiter: signal SIGRTMIN+2 %d, si_code SI_TIMER %d, si_value %d\n", sig == SIGRTMIN + 2,
         info.si_code == SI_TIMER, info.si_value.sival_int);
  return NULL;
}

static int Thread(void) {
  Block(SIGRTMIN + 2, SIG_BLOCK);  // in every thread (the waiter inherits the mask)
  sem_init(&g_ready, 0, 0);
  pthread_t th;
  pthread_create(&th, NULL, Waiter, NULL);
  sem_wait(&g_ready);
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_THREAD_ID;
  ev.sigev_signo = SIGRTMIN + 2;
  ev.sigev_value.sival_int = 77;
  ev.sigev_notify_thread_id = 0x7fffffff;
  timer_t t;
  errno = 0;
  const int r = timer_create(CLOCK_MONOTONIC, &ev, &t);
  printf("a tid that is no thread: %d, errno EINVAL %d\n", r, errno == EINVAL);
  ev.sigev_notify_thread_id = g_waiter_tid;
  Check(timer_create(CLOCK_MONOTONIC, &ev, &t) == 0, "timer_create");
  struct itimerspec s = Spec(10000000, 0);
  Check(timer_settime(t, 0, &s, NULL) == 0, "timer_settime");
  pthread_join(th, NULL);
  sigset_t pending;
  sigpending(&pending);
  printf("main: nothing pending %d\n", !sigismember(&pending, SIGRTMIN + 2));
  return 0;
}

static sem_t g_callbacks;
static volatile int g_callback_value;

static void Callback(union sigval value) {
  g_callback_value = value.sival_int;
  sem_post(&g_callbacks);
}

static int SigevThread(void) {
  sem_init(&g_callbacks, 0, 0);
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_THREAD;
  ev.sigev_notify_function = Callback;
  ev.sigev_value.sival_int = 4242;
  timer_t t;
  Check(timer_create(CLOCK_MONOTONIC, &ev, &t) == 0, "timer_create(SIGEV_THREAD)");
  struct itimerspec s = Spec(10000000, 10000000);
  Check(timer_settime(t, 0, &s, NULL) == 0, "timer_settime");
  for (int i = 0; i < 3; ++i) sem_wait(&g_callbacks);
  Check(timer_delete(t) == 0, "timer_delete");
  printf("callbacks: 3, value %d\n", g_callback_value);
  return 0;
}

static int None(void) {
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_NONE;
  timer_t t;
  Check(timer_create(CLOCK_MONOTONIC, &ev, &t) == 0, "timer_create");
  struct itimerspec s = Spec(10000000000L, 0), left;
  Check(timer_settime(t, 0, &s, NULL) == 0, "timer_settime");
  Check(timer_gettime(t, &left) == 0, "timer_gettime");
  printf("one-shot: left in (0, 10 s]: %d\n",
         Ns(&left.it_value) > 0 && Ns(&left.it_value) <= 10000000000L);
  s = Spec(1000000, 0);  // 1 ms, then expired: 0
  Check(timer_settime(t, 0, &s, NULL) == 0, "timer_settime");
  struct timespec pause = {0, 5000000};
  nanosleep(&pause, NULL);
  Check(timer_gettime(t, &left) == 0, "timer_gettime");
  printf("expired one-shot: %ld ns left\n", Ns(&left.it_value));
  s = Spec(1000000, 3000000);  // periodic: always some time left
  Check(timer_settime(t, 0, &s, NULL) == 0, "timer_settime");
  nanosleep(&pause, NULL);
  Check(timer_gettime(t, &left) == 0, "timer_gettime");
  printf("periodic: left in (0, 3 ms]: %d, interval %ld ns, overrun %d\n",
         Ns(&left.it_value) > 0 && Ns(&left.it_value) <= 3000000, Ns(&left.it_interval),
         timer_getoverrun(t));
  sigset_t pending;
  sigpending(&pending);
  printf("nothing pending: %d\n", sigisemptyset(&pending));
  return 0;
}

static int Overrun(void) {
  const int sig = SIGRTMIN;
  Block(sig, SIG_BLOCK);
  timer_t t = SignalTimer(sig, 5);
  struct itimerspec s = Spec(5000000, 5000000);
  Check(timer_settime(t, 0, &s, NULL) == 0, "timer_settime");
  // 60 ms: at least 12 periods end before the signal is taken, whatever the host's speed.
  struct timespec wait = {0, 60000000};
  while (nanosleep(&wait, &wait) != 0) {
  }
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, sig);
  siginfo_t info;
  Check(sigwaitinfo(&set, &info) == sig, "sigwaitinfo");
  const int overrun = timer_getoverrun(t);
  printf("si_code SI_TIMER %d, si_value %d, si_overrun >= 11: %d, timer_getoverrun agrees: %d\n",
         info.si_code == SI_TIMER, info.si_value.sival_int, info.si_overrun >= 11,
         overrun == info.si_overrun);
  // The timer goes on: the next period raises it again.
  Check(sigwaitinfo(&set, &info) == sig, "sigwaitinfo");
  printf("again: si_code SI_TIMER %d\n", info.si_code == SI_TIMER);
  Check(timer_delete(t) == 0, "timer_delete");
  return 0;
}

static int Delete(void) {
  Install(SIGUSR1);
  timer_t t = SignalTimer(SIGUSR1, 0);
  struct itimerspec s = Spec(5000000, 5000000);
  Check(timer_settime(t, 0, &s, NULL) == 0, "timer_settime");
  WaitFired(SIGUSR1, 2);
  Check(timer_delete(t) == 0, "timer_delete");
  const int after = g_fired;
  struct timespec wait = {0, 50000000};
  while (nanosleep(&wait, &wait) != 0) {
  }
  printf("no tick after timer_delete: %d\n", g_fired == after);
  struct itimerspec left;
  errno = 0;
  int r = timer_gettime(t, &left);
  printf("gettime of a deleted timer: %d, EINVAL %d\n", r, errno == EINVAL);
  errno = 0;
  r = timer_delete(t);
  printf("delete again: %d, EINVAL %d\n", r, errno == EINVAL);
  return 0;
}

static int Fork(void) {
  timer_t t = SignalTimer(SIGUSR1, 0);
  struct itimerspec s = Spec(100000000000L, 1000000000L);
  Check(timer_settime(t, 0, &s, NULL) == 0, "timer_settime");
  fflush(stdout);
  const pid_t child = fork();
  if (child == 0) {
    struct itimerspec left;
    errno = 0;
    const int r = timer_gettime(t, &left);
    printf("child: timer_gettime %d, EINVAL %d\n", r, errno == EINVAL);
    errno = 0;
    const int overrun = timer_getoverrun(t);
    printf("child: timer_getoverrun %d, EINVAL %d\n", overrun, errno == EINVAL);
    fflush(stdout);
    _exit(0);
  }
  int status = 0;
  waitpid(child, &status, 0);
  struct itimerspec left;
  Check(timer_gettime(t, &left) == 0, "timer_gettime");
  printf("parent: child exited %d; timer armed %d, interval %ld ns\n",
         WIFEXITED(status) && WEXITSTATUS(status) == 0, Ns(&left.it_value) > 0,
         Ns(&left.it_interval));
  return 0;
}

static int Exec(char** argv) {
  Block(SIGUSR1, SIG_BLOCK);  // the mask survives execve, and so would a pending signal
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = SIGUSR1;
  int id = -1;
  Check(syscall(SYS_timer_create, CLOCK_MONOTONIC, &ev, &id) == 0, "timer_create");
  struct itimerspec s = Spec(1000000, 0);
  Check(syscall(SYS_timer_settime, id, 0, &s, NULL) == 0, "timer_settime");
  for (;;) {  // until its signal is pending
    sigset_t pending;
    sigpending(&pending);
    if (sigismember(&pending, SIGUSR1)) break;
    struct timespec pause = {0, 1000000};
    nanosleep(&pause, NULL);
  }
  alarm(1000);
  char idtext[16];
  snprintf(idtext, sizeof idtext, "%d", id);
  char* args[] = {argv[0], "after_exec", idtext, NULL};
  execv("/proc/self/exe", args);
  printf("FAILED: execv (errno %d)\n", errno);
  return 1;
}

static int AfterExec(const char* idtext) {
  const int id = atoi(idtext);
  struct itimerspec left;
  const long r = syscall(SYS_timer_gettime, id, &left);
  printf("after execve: timer_gettime %ld, EINVAL %d\n", r, errno == EINVAL);
  sigset_t pending;
  sigpending(&pending);
  printf("its signal is not pending: %d; alarm kept: %d\n", !sigismember(&pending, SIGUSR1),
         alarm(0) > 0);
  return 0;
}

static long RawCreate(long clock, struct sigevent* ev, int* id) {
  long r = syscall(SYS_timer_create, clock, ev, id);
  return r < 0 ? -errno : r;
}

static int Errors(void) {
  int id = -1;
  printf("unknown clock 99: %ld (EINVAL %d)\n", RawCreate(99, NULL, &id), -EINVAL);
  printf("CLOCK_MONOTONIC_RAW: %ld (EOPNOTSUPP %d)\n", RawCreate(CLOCK_MONOTONIC_RAW, NULL, &id),
         -EOPNOTSUPP);
  struct sigevent ev;
  memset(&ev, 0, sizeof ev);
  ev.sigev_notify = 3;
  ev.sigev_signo = SIGUSR1;
  printf("sigev_notify 3: %ld\n", RawCreate(CLOCK_MONOTONIC, &ev, &id));
  ev.sigev_notify = SIGEV_SIGNAL;
  ev.sigev_signo = 65;
  printf("signal 65: %ld\n", RawCreate(CLOCK_MONOTONIC, &ev, &id));
  ev.sigev_signo = 0;
  printf("signal 0: %ld\n", RawCreate(CLOCK_MONOTONIC, &ev, &id));
  printf("bad sigevent pointer: %ld (EFAULT %d)\n", RawCreate(CLOCK_MONOTONIC, (void*)16, &id),
         -EFAULT);
  ev.sigev_signo = SIGUSR1;
  Check(RawCreate(CLOCK_MONOTONIC, &ev, &id) == 0, "timer_create");
  struct itimerspec s = Spec(1000, 0);
  s.it_value.tv_nsec = 1000000000;
  long r = syscall(SYS_timer_settime, id, 0, &s, NULL);
  printf("nsec 1e9: %ld, errno EINVAL %d\n", r, errno == EINVAL);
  s = Spec(1000, 0);
  s.it_interval.tv_sec = -1;
  r = syscall(SYS_timer_settime, id, 0, &s, NULL);
  printf("negative interval: %ld, errno EINVAL %d\n", r, errno == EINVAL);
  r = syscall(SYS_timer_settime, id, 0, NULL, NULL);
  printf("no setting: %ld, errno EINVAL %d\n", r, errno == EINVAL);
  r = syscall(SYS_timer_settime, id + 1000, 0, &s, NULL);
  printf("unknown id: %ld, errno EINVAL %d\n", r, errno == EINVAL);
  r = syscall(SYS_timer_getoverrun, id + 1000);
  printf("getoverrun of an unknown id: %ld, errno EINVAL %d\n", r, errno == EINVAL);
  printf("getoverrun of a new timer: %ld\n", syscall(SYS_timer_getoverrun, id));
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: posix_timers SCENARIO\n");
    return 2;
  }
  const char* s = argv[1];
  if (strcmp(s, "signal") == 0) return Signal();
  if (strcmp(s, "periodic") == 0) return Periodic();
  if (strcmp(s, "abstime") == 0) return Abstime();
  if (strcmp(s, "thread") == 0) return Thread();
  if (strcmp(s, "sigev_thread") == 0) return SigevThread();
  if (strcmp(s, "none") == 0) return None();
  if (strcmp(s, "overrun") == 0) return Overrun();
  if (strcmp(s, "delete") == 0) return Delete();
  if (strcmp(s, "fork") == 0) return Fork();
  if (strcmp(s, "errors") == 0) return Errors();
  if (strcmp(s, "exec") == 0) return Exec(argv);
  if (strcmp(s, "after_exec") == 0 && argc > 2) return AfterExec(argv[2]);
  fprintf(stderr, "unknown scenario %s\n", s);
  return 2;
}
