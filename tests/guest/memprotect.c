// memprotect: argv[1] names a scenario of memory protection; the output is the same natively
// and in flurry (tests/integration/memprotect_test.cc compares them). Every fault is caught
// by a SIGSEGV handler that prints its si_code and where si_addr lies. Scenarios:
//   readonly  a write to a page mprotect made read-only faults (SEGV_ACCERR); made writable
//             again, it takes the write
//   none      PROT_NONE guard pages fault on read and on write (SEGV_ACCERR)
//   hole      the munmapped middle of a mapping faults (SEGV_MAPERR); its neighbours do not
//   image     the program's own code and read-only data refuse writes; its code runs
//   jit       W^X: code written to a read/write page faults when called (not executable),
//             runs after mprotect(PROT_READ|PROT_EXEC), refuses writes then
//   grow      a buffer reserved PROT_NONE grows a page per fault: the handler mprotects the
//             faulting page read/write and returns, the store is made again
//   fixed     MAP_FIXED_NOREPLACE refuses mapped memory (EEXIST), MAP_FIXED replaces it with
//             zeroes; mremap moves a read-only mapping with its bytes and its protection
//   errors    mprotect's argument checks: unaligned (EINVAL), unmapped (ENOMEM), bad bits
//   efault    syscalls given buffers the program could not access itself fail with EFAULT:
//             write(2) from PROT_NONE, getrandom and clock_gettime into read-only pages,
//             uname into a hole. (Not a buffer that becomes inaccessible part way: Linux then
//             writes the accessible part to a file but fails a write to a pipe.)
//   unhandled a write to read-only memory with no handler: killed by SIGSEGV
#define _GNU_SOURCE
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096

static sigjmp_buf g_jump;
static volatile uintptr_t g_base;  // si_addr is printed relative to this
static volatile int g_faults;
static volatile int g_grow;  // grow: make the faulting page writable and return

static void OnSegv(int sig, siginfo_t* info, void* uc) {
  (void)sig;
  (void)uc;
  ++g_faults;
  const uintptr_t addr = (uintptr_t)info->si_addr;
  if (g_grow) {
    mprotect((void*)(addr & ~(uintptr_t)(PAGE - 1)), PAGE, PROT_READ | PROT_WRITE);
    return;
  }
  printf("  SIGSEGV %s at base%+ld\n",
         info->si_code == SEGV_ACCERR   ? "SEGV_ACCERR"
         : info->si_code == SEGV_MAPERR ? "SEGV_MAPERR"
                                        : "other",
         (long)(addr - g_base));
  siglongjmp(g_jump, 1);
}

static void Catch(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = OnSegv;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigaction(SIGSEGV, &sa, NULL);
}

// Each probe says whether the access went through.
static void Write(const char* what, volatile char* p, char value) {
  printf("write %s:\n", what);
  if (sigsetjmp(g_jump, 1) == 0) {
    *p = value;
    printf("  ok, reads back %d\n", *p);
  }
}

static void Read(const char* what, volatile char* p) {
  printf("read %s:\n", what);
  if (sigsetjmp(g_jump, 1) == 0) printf("  ok, %d\n", *p);
}

static char* Map(size_t pages, int prot) {
  char* p = mmap(NULL, pages * PAGE, prot, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    perror("mmap");
    exit(2);
  }
  g_base = (uintptr_t)p;
  return p;
}

static void Check(const char* what, int result) {
  printf("%s: %s\n", what, result == 0 ? "0" : strerror(errno));
}

static int ReadOnly(void) {
  char* p = Map(2, PROT_READ | PROT_WRITE);
  p[PAGE + 5] = 7;
  Check("mprotect read-only", mprotect(p + PAGE, PAGE, PROT_READ));
  Write("first page", p + 10, 1);
  Write("read-only page", p + PAGE + 5, 9);
  Read("read-only page", p + PAGE + 5);
  Check("mprotect read/write", mprotect(p + PAGE, PAGE, PROT_READ | PROT_WRITE));
  Write("writable again", p + PAGE + 5, 9);
  return 0;
}

static int None(void) {
  char* p = Map(3, PROT_READ | PROT_WRITE);
  Check("mprotect none", mprotect(p + PAGE, PAGE, PROT_NONE));
  Read("guard page", p + PAGE + 100);
  Write("guard page", p + PAGE, 1);
  Write("page after the guard", p + 2 * PAGE, 3);
  Check("mprotect none (whole mapping)", mprotect(p, 3 * PAGE, PROT_NONE));
  Read("first page", p);
  return 0;
}

static int Hole(void) {
  char* p = Map(3, PROT_READ | PROT_WRITE);
  Check("munmap middle", munmap(p + PAGE, PAGE));
  Read("hole", p + PAGE + 8);
  Write("hole", p + PAGE + 8, 1);
  Write("before the hole", p + PAGE - 1, 4);
  Write("after the hole", p + 2 * PAGE, 5);
  return 0;
}

static int Answer(void) { return 42; }
static const char kConstant[] = "constant";

static int Image(void) {
  g_base = (uintptr_t)&Answer;
  Write("own code", (volatile char*)&Answer, (char)0xc3);
  printf("code still runs: %d\n", Answer());
  g_base = (uintptr_t)kConstant;
  Write("read-only data", (volatile char*)kConstant, 'X');
  printf("constant: %s\n", kConstant);
  return 0;
}

static int Jit(void) {
  static const unsigned char kCode[] = {0xb8, 0x2a, 0x00, 0x00, 0x00, 0xc3};  // mov eax,42; ret
  char* p = Map(1, PROT_READ | PROT_WRITE);
  memcpy(p, kCode, sizeof kCode);
  int (*fn)(void) = (int (*)(void))(void*)p;
  printf("call read/write page:\n");
  if (sigsetjmp(g_jump, 1) == 0) printf("  ran: %d\n", fn());
  Check("mprotect read/exec", mprotect(p, PAGE, PROT_READ | PROT_EXEC));
  printf("call read/exec page:\n");
  if (sigsetjmp(g_jump, 1) == 0) printf("  ran: %d\n", fn());
  Write("read/exec page", p + 100, 1);
  return 0;
}

static int Grow(void) {
  enum { kPages = 64 };
  char* p = Map(kPages, PROT_NONE);
  g_grow = 1;
  long sum = 0;
  for (int i = 0; i < kPages * PAGE; i += 512) {
    p[i] = (char)(i / 512);
    sum += p[i];
  }
  g_grow = 0;
  printf("grew %d pages with %d faults, sum %ld\n", kPages, g_faults, sum);
  Read("grown page", p + 17 * PAGE + 512);
  return 0;
}

static int Fixed(void) {
  char* p = Map(2, PROT_READ | PROT_WRITE);
  p[0] = 1;
  p[PAGE] = 2;
  void* r = mmap(p, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  printf("MAP_FIXED_NOREPLACE over a mapping: %s\n", r == MAP_FAILED ? strerror(errno) : "mapped");
  r = mmap(p + PAGE, PAGE, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0);
  printf("MAP_FIXED over the second page: %s, reads %d\n", r == p + PAGE ? "same address" : "moved",
         p[PAGE]);
  Write("MAP_FIXED read-only page", p + PAGE, 3);

  char* q = Map(1, PROT_READ | PROT_WRITE);
  strcpy(q, "moved bytes");
  Check("mprotect read-only", mprotect(q, PAGE, PROT_READ));
  char* m = mremap(q, PAGE, 64 * PAGE, MREMAP_MAYMOVE);
  if (m == MAP_FAILED) {
    perror("mremap");
    return 1;
  }
  g_base = (uintptr_t)m;
  printf("after mremap: \"%s\"\n", m);
  Write("moved read-only mapping", m + 10, 'x');
  Write("its grown part", m + 63 * PAGE, 'x');
  return 0;
}

static int Errors(void) {
  char* p = Map(2, PROT_READ | PROT_WRITE);
  Check("mprotect unaligned", mprotect(p + 1, PAGE, PROT_READ));
  Check("mprotect bad bits", mprotect(p, PAGE, 0x100));
  Check("munmap second page", munmap(p + PAGE, PAGE));
  Check("mprotect over the hole", mprotect(p, 2 * PAGE, PROT_READ));
  // Linux changes the pages before the hole, then fails.
  Write("first page", p, 1);
  Check("mprotect zero length", mprotect(p, 0, PROT_NONE));
  return 0;
}

static void Result(const char* what, long r) {
  printf("%s: %s\n", what, r >= 0 ? "ok" : strerror(errno));
}

static int Efault(void) {
  char* p = Map(4, PROT_READ | PROT_WRITE);
  strcpy(p, "data\n");
  Check("mprotect read-only", mprotect(p + PAGE, PAGE, PROT_READ));
  Check("mprotect none", mprotect(p + 2 * PAGE, PAGE, PROT_NONE));
  Check("munmap", munmap(p + 3 * PAGE, PAGE));
  Result("write from a read/write page",
         syscall(SYS_write, -1, p, 5) == -1 && errno == EBADF ? 0 : -1);
  Result("write from PROT_NONE", syscall(SYS_write, 1, p + 2 * PAGE, 5));
  Result("getrandom into read/write", syscall(SYS_getrandom, p, 16, 0));
  Result("getrandom into read-only", syscall(SYS_getrandom, p + PAGE, 16, 0));
  Result("clock_gettime into read-only", syscall(SYS_clock_gettime, CLOCK_MONOTONIC, p + PAGE));
  Result("uname into a hole", syscall(SYS_uname, p + 3 * PAGE));
  return 0;
}

static int Unhandled(void) {
  char* p = Map(1, PROT_READ);
  printf("writing to read-only memory\n");
  fflush(stdout);
  *(volatile char*)p = 1;
  printf("not reached\n");
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc < 2) {
    fprintf(stderr, "usage: memprotect SCENARIO\n");
    return 2;
  }
  const char* s = argv[1];
  if (strcmp(s, "unhandled") != 0) Catch();
  if (strcmp(s, "readonly") == 0) return ReadOnly();
  if (strcmp(s, "none") == 0) return None();
  if (strcmp(s, "hole") == 0) return Hole();
  if (strcmp(s, "image") == 0) return Image();
  if (strcmp(s, "jit") == 0) return Jit();
  if (strcmp(s, "grow") == 0) return Grow();
  if (strcmp(s, "fixed") == 0) return Fixed();
  if (strcmp(s, "errors") == 0) return Errors();
  if (strcmp(s, "efault") == 0) return Efault();
  if (strcmp(s, "unhandled") == 0) return Unhandled();
  fprintf(stderr, "memprotect: unknown scenario %s\n", s);
  return 2;
}
