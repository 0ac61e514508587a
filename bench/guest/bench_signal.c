// Times signal delivery from inside the program: raise(SIGUSR1) to a handler and back (the
// kill syscall, the frame, the handler, rt_sigreturn), and a fault caught by a handler that
// steps over it (ud2 -> SIGILL -> handler -> rt_sigreturn).
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ucontext.h>
#include <time.h>

static volatile long g_handled;

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void OnUsr1(int sig) {
  (void)sig;
  ++g_handled;
}

static void OnIll(int sig, siginfo_t* info, void* ucv) {
  (void)sig, (void)info;
  ((ucontext_t*)ucv)->uc_mcontext.gregs[REG_RIP] += 2;  // over ud2
  ++g_handled;
}

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000;
  signal(SIGUSR1, OnUsr1);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnIll;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGILL, &sa, NULL);
  double start = now_ns();
  for (int i = 0; i < n; i++) raise(SIGUSR1);
  double mid = now_ns();
  for (int i = 0; i < n; i++) __asm__ volatile("ud2");
  double end = now_ns();
  if (g_handled != 2L * n) return 1;
  printf("raise_ns=%.1f\nfault_ns=%.1f\n", (mid - start) / n, (end - mid) / n);
  return 0;
}
