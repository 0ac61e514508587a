// signals: argv[1] names a scenario of signal delivery; the output is the same natively and in
// flurry (the integration test compares them). Scenarios:
//   raise     SA_SIGINFO handler for raise(): signal, si_code, si_pid; FPU state survives
//   mask      a blocked signal stays pending (sigpending) and runs when unblocked
//   order     a handler raising a signal its mask blocks: that one runs after it returns
//   ignore    SIG_IGN, and SIGCHLD's default: nothing happens
//   segv      catching a null dereference (si_addr, si_code), leaving with siglongjmp
//   ud2       SIGILL handler that steps over the instruction through its ucontext
//   div0      SIGFPE (FPE_INTDIV) caught, siglongjmp
//   overflow  stack overflow caught on the alternate stack
//   resethand SA_RESETHAND: the second raise kills (SIGUSR1's default: exit status 138)
//   term      raise(SIGTERM) with no handler: exit status 143
//   alarm     alarm() while computing runs the handler; alarm's return values
//   itimer    a periodic setitimer: five SIGALRMs while computing, then getitimer shows it off
//   eintr     nanosleep and pause interrupted by SIGALRM return EINTR
//   suspend   sigsuspend with SIGALRM blocked outside it: the handler runs inside, mask restored
//   timeout   alarm() with no handler ends a busy loop: exit status 142
//   sigwait   sigwaitinfo/sigtimedwait take blocked signals (raised, timer, an ignored one
//             while blocked) and time out
//   suspend2  two signals pending when sigsuspend unblocks both: both handlers run
//   int3      SIGTRAP handler for int3; the program goes on after it
//   restart   read() of stdin under a 50 ms timer: EINTR without SA_RESTART, the data with it.
//             argv[2]: a file it creates when it starts reading (the feeder waits for it)
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <fcntl.h>
#include <sys/time.h>
#include <sys/ucontext.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t g_count;
static sigjmp_buf g_jump;
static char g_log[256];
static volatile int g_log_len;
static volatile int* volatile g_low = (volatile int*)16;  // in the unmapped first page

static void Log(const char* s) {
  size_t n = strlen(s);
  if (g_log_len + n < sizeof g_log) {
    memcpy(g_log + g_log_len, s, n);
    g_log_len += n;
  }
}

static void OnInfo(int sig, siginfo_t* info, void* uc) {
  (void)uc;
  volatile double x = 1.0;  // handler's own FPU use
  for (int i = 0; i < 10; ++i) x = x * 3.0 + 0.5;
  printf("handler: signal %d, code %d, from self %d, x %.1f\n", sig, info->si_code,
         info->si_pid == getpid(), x);
  ++g_count;
}

static void Install(int sig, void (*fn)(int, siginfo_t*, void*), int flags, int block) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = fn;
  sa.sa_flags = SA_SIGINFO | flags;
  sigemptyset(&sa.sa_mask);
  if (block) sigaddset(&sa.sa_mask, block);
  if (sigaction(sig, &sa, NULL) != 0) {
    perror("sigaction");
    exit(2);
  }
}

static void OnOrder(int sig, siginfo_t* info, void* uc) {
  (void)info, (void)uc;
  if (sig == SIGUSR1) {
    Log("usr1-start ");
    raise(SIGUSR2);  // blocked by the mask: runs after this handler
    Log("usr1-end ");
  } else {
    Log("usr2 ");
  }
}

static void OnJump(int sig, siginfo_t* info, void* uc) {
  (void)uc;
  printf("caught signal %d, code %d, addr %p\n", sig, info->si_code, info->si_addr);
  siglongjmp(g_jump, 1);
}

static void OnIll(int sig, siginfo_t* info, void* ucv) {
  ucontext_t* uc = ucv;
  printf("caught signal %d, code %d, at the fault %d\n", sig, info->si_code,
         (uintptr_t)info->si_addr == (uintptr_t)uc->uc_mcontext.gregs[REG_RIP]);
  uc->uc_mcontext.gregs[REG_RIP] += 2;  // ud2 is two bytes
}

static void OnTrap(int sig, siginfo_t* info, void* uc) {
  (void)uc;
  printf("caught signal %d, code %d\n", sig, info->si_code);
}

static void OnOverflow(int sig, siginfo_t* info, void* uc) {
  (void)info, (void)uc;
  char here;
  stack_t ss;
  sigaltstack(NULL, &ss);
  printf("caught signal %d on the alternate stack %d (flags %d)\n", sig,
         &here > (char*)ss.ss_sp && &here < (char*)ss.ss_sp + ss.ss_size, ss.ss_flags);
  siglongjmp(g_jump, 1);
}

#pragma GCC diagnostic ignored "-Winfinite-recursion"
static int Recurse(int depth) {
  volatile char pad[1024];
  pad[0] = (char)depth;
  return Recurse(depth + 1) + pad[0];
}

static volatile sig_atomic_t g_alarms;
static void OnAlarm(int sig) {
  (void)sig;
  ++g_alarms;
}

static void SetTimer(long first_ms, long every_ms) {
  struct itimerval t = {{every_ms / 1000, every_ms % 1000 * 1000},
                        {first_ms / 1000, first_ms % 1000 * 1000}};
  if (setitimer(ITIMER_REAL, &t, NULL) != 0) {
    perror("setitimer");
    exit(2);
  }
}

static void Compute(int alarms) {
  volatile double x = 0;
  while (g_alarms < alarms) x = x * 0.5 + 1.0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  const char* what = argc > 1 ? argv[1] : "";
  if (strcmp(what, "raise") == 0) {
    Install(SIGUSR1, OnInfo, 0, 0);
    volatile double y = 2.5;
    raise(SIGUSR1);
    kill(getpid(), SIGUSR1);
    printf("after: count %d, y %.2f\n", g_count, y * 2);
  } else if (strcmp(what, "mask") == 0) {
    Install(SIGUSR1, OnInfo, 0, 0);
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR1);
    sigpending(&pending);
    printf("blocked: count %d, pending %d\n", g_count, sigismember(&pending, SIGUSR1));
    sigprocmask(SIG_UNBLOCK, &set, NULL);
    printf("unblocked: count %d\n", g_count);
  } else if (strcmp(what, "order") == 0) {
    Install(SIGUSR1, OnOrder, 0, SIGUSR2);
    Install(SIGUSR2, OnOrder, 0, 0);
    raise(SIGUSR1);
    printf("%s\n", g_log);
  } else if (strcmp(what, "ignore") == 0) {
    signal(SIGUSR1, SIG_IGN);
    raise(SIGUSR1);
    raise(SIGCHLD);
    printf("still here\n");
  } else if (strcmp(what, "segv") == 0) {
    Install(SIGSEGV, OnJump, 0, 0);
    if (sigsetjmp(g_jump, 1) == 0) {
      g_low[0] = 1;
      printf("not reached\n");
    }
    if (sigsetjmp(g_jump, 1) == 0) g_low[2] = 2;  // again: the mask was restored
    printf("after segv\n");
  } else if (strcmp(what, "ud2") == 0) {
    Install(SIGILL, OnIll, 0, 0);
    __asm__ volatile("ud2");
    __asm__ volatile("ud2");
    printf("after ud2\n");
  } else if (strcmp(what, "div0") == 0) {
    Install(SIGFPE, OnJump, 0, 0);
    if (sigsetjmp(g_jump, 1) == 0) {
      volatile int n = 7, zero = 0;
      volatile int r = n / zero;
      (void)r;
    }
    printf("after div0\n");
  } else if (strcmp(what, "overflow") == 0) {
    static char alt[64 * 1024];
    stack_t ss = {.ss_sp = alt, .ss_flags = 0, .ss_size = sizeof alt};
    sigaltstack(&ss, NULL);
    Install(SIGSEGV, OnOverflow, SA_ONSTACK, 0);
    if (sigsetjmp(g_jump, 1) == 0) Recurse(0);
    printf("after overflow\n");
  } else if (strcmp(what, "resethand") == 0) {
    Install(SIGUSR1, OnInfo, SA_RESETHAND, 0);
    raise(SIGUSR1);
    raise(SIGUSR1);
    printf("not reached\n");
  } else if (strcmp(what, "term") == 0) {
    raise(SIGTERM);
    printf("not reached\n");
  } else if (strcmp(what, "alarm") == 0) {
    signal(SIGALRM, OnAlarm);
    printf("alarm(5) = %u\n", alarm(5));
    printf("alarm(0) = %u\n", alarm(0));  // 5 left (rounded)
    alarm(1);
    Compute(1);
    printf("alarm while computing: %d\n", g_alarms);
  } else if (strcmp(what, "itimer") == 0) {
    signal(SIGALRM, OnAlarm);
    SetTimer(20, 20);
    Compute(5);
    SetTimer(0, 0);
    struct itimerval now;
    getitimer(ITIMER_REAL, &now);
    printf("ticks %d, timer now %ld.%06ld\n", g_alarms, (long)now.it_value.tv_sec,
           (long)now.it_value.tv_usec);
  } else if (strcmp(what, "eintr") == 0) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = OnAlarm;
    sigaction(SIGALRM, &sa, NULL);  // no SA_RESTART
    SetTimer(50, 0);
    struct timespec ts = {5, 0};
    int r = nanosleep(&ts, &ts);
    printf("nanosleep = %d (%s), handler ran %d, time left %d\n", r, strerror(errno), g_alarms,
           ts.tv_sec >= 4);
    SetTimer(50, 0);
    r = pause();
    printf("pause = %d (%s), handler ran %d\n", r, strerror(errno), g_alarms);
  } else if (strcmp(what, "suspend") == 0) {
    signal(SIGALRM, OnAlarm);
    sigset_t block, empty, now;
    sigemptyset(&block);
    sigaddset(&block, SIGALRM);
    sigemptyset(&empty);
    sigprocmask(SIG_BLOCK, &block, NULL);
    SetTimer(50, 0);
    int r = sigsuspend(&empty);
    sigprocmask(SIG_BLOCK, NULL, &now);
    printf("sigsuspend = %d (%s), handler ran %d, SIGALRM blocked again %d\n", r,
           strerror(errno), g_alarms, sigismember(&now, SIGALRM));
  } else if (strcmp(what, "sigwait") == 0) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGUSR1);
    sigaddset(&set, SIGALRM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    raise(SIGUSR1);
    siginfo_t info;
    int sig = sigwaitinfo(&set, &info);
    printf("sigwaitinfo = %d, code %d, from self %d\n", sig, info.si_code, info.si_pid == getpid());
    SetTimer(50, 0);
    struct timespec five = {5, 0}, short_wait = {0, 10000000};
    sig = sigtimedwait(&set, &info, &five);
    printf("sigtimedwait = %d, code %d\n", sig, info.si_code);
    sig = sigtimedwait(&set, &info, &short_wait);
    printf("sigtimedwait = %d (%s)\n", sig, strerror(errno));
    sigset_t winch;
    sigemptyset(&winch);
    sigaddset(&winch, SIGWINCH);  // ignored by default, but blocked: it pends
    sigprocmask(SIG_BLOCK, &winch, NULL);
    raise(SIGWINCH);
    printf("sigwaitinfo = %d\n", sigwaitinfo(&winch, &info));
  } else if (strcmp(what, "suspend2") == 0) {
    Install(SIGUSR1, OnInfo, 0, 0);
    Install(SIGUSR2, OnInfo, 0, 0);
    sigset_t both, empty, now;
    sigemptyset(&both);
    sigaddset(&both, SIGUSR1);
    sigaddset(&both, SIGUSR2);
    sigemptyset(&empty);
    sigprocmask(SIG_BLOCK, &both, NULL);
    raise(SIGUSR1);
    raise(SIGUSR2);
    int r = sigsuspend(&empty);
    sigprocmask(SIG_BLOCK, NULL, &now);
    printf("sigsuspend = %d, handlers ran %d, still blocked %d\n", r, g_count,
           sigismember(&now, SIGUSR1) && sigismember(&now, SIGUSR2));
  } else if (strcmp(what, "int3") == 0) {
    Install(SIGTRAP, OnTrap, 0, 0);
    __asm__ volatile("int3");
    printf("after int3\n");
  } else if (strcmp(what, "restart") == 0) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = OnAlarm;
    sigaction(SIGALRM, &sa, NULL);
    SetTimer(50, 50);
    if (argc > 2) close(open(argv[2], O_WRONLY | O_CREAT, 0644));
    char buf[64];
    ssize_t n = read(0, buf, sizeof buf);
    printf("without SA_RESTART: read = %zd (%s), alarms %d\n", n, strerror(errno), g_alarms > 0);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGALRM, &sa, NULL);
    g_alarms = 0;
    n = read(0, buf, sizeof buf);
    SetTimer(0, 0);
    printf("with SA_RESTART: read = %zd, alarms %d\n", n, g_alarms > 1);
  } else if (strcmp(what, "timeout") == 0) {
    alarm(1);
    Compute(1);
    printf("not reached\n");
  } else {
    printf("usage: signals SCENARIO\n");
    return 2;
  }
  return 0;
}
