// Times page protection from inside the program: mprotect of one page back and forth between
// read/write and read-only (the syscall, and under flurry the backend's change: a stub
// mprotect, or page-table entries and a TLB flush), and a fault that a SIGSEGV handler answers
// by making the page writable (what garbage collectors' write barriers and growing guard
// regions do): fault, handler, mprotect, rt_sigreturn, the store again.
#define _GNU_SOURCE
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096

static volatile long g_faults;

static double now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void OnSegv(int sig, siginfo_t* info, void* uc) {
  (void)sig, (void)uc;
  mprotect((void*)((uintptr_t)info->si_addr & ~(uintptr_t)(PAGE - 1)), PAGE,
           PROT_READ | PROT_WRITE);
  ++g_faults;
}

int main(int argc, char** argv) {
  int n = argc > 1 ? atoi(argv[1]) : 20000;
  char* page = mmap(NULL, PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  char* region = mmap(NULL, (size_t)n * PAGE, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (page == MAP_FAILED || region == MAP_FAILED) return 1;
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnSegv;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, NULL);
  page[0] = 1;
  double start = now_ns();
  for (int i = 0; i < n; i++) {
    mprotect(page, PAGE, PROT_READ);
    mprotect(page, PAGE, PROT_READ | PROT_WRITE);
  }
  double mid = now_ns();
  for (int i = 0; i < n; i++) region[(size_t)i * PAGE] = 1;
  double end = now_ns();
  if (g_faults != n) return 2;
  printf("mprotect_ns=%.1f\nfault_unprotect_ns=%.1f\n", (mid - start) / (2.0 * n), (end - mid) / n);
  return 0;
}
