// A hostile guest: tries to get out of flurry's confinement. Run by
// tests/integration/escape_test.cc, which asserts each attempt is refused.
//
//   escape MODE [ARGS...]
//
// Every system call here is a raw `syscall` (or a jump into the seccomp stub's own syscall
// instruction), so no libc wrapper can hide or retry anything. Results are printed as
// "name=value" lines; stdout is unbuffered so a line printed before the guest dies is kept.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>

#define AT_FDCWD_ (-100)
#define AF_INET_ 2
#define SOCK_STREAM_ 1
#define SIGKILL_ 9
#define SIGCHLD_ 17

// Where the seccomp backend's stub and its shared page live (stub_abi.h).
#define STUB_TEXT 0x7e0000000000ULL
#define STUB_SHARED 0x7d0000000000ULL
#define STUB_SHARED_SIZE 0x100000ULL /* all lanes' pages */

static long raw6(long nr, long a, long b, long c, long d, long e, long f) {
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  __asm__ volatile("syscall"
                   : "+a"(nr)
                   : "D"(a), "S"(b), "d"(c), "r"(r10), "r"(r8), "r"(r9)
                   : "rcx", "r11", "memory");
  return nr;
}
#define RAW3(n, a, b, c) raw6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)

// Calls the stub's `syscall; ret` at `insn` with the guest's own registers: the syscall then
// comes from the stub's one allowed site. Returns what it returned (if the stub survives).
static long site6(uint64_t insn, long nr, long a, long b, long c, long d, long e, long f) {
  register long r10 __asm__("r10") = d;
  register long r8 __asm__("r8") = e;
  register long r9 __asm__("r9") = f;
  __asm__ volatile(
      "sub $128, %%rsp\n"  // keep the red zone
      "call *%[insn]\n"
      "add $128, %%rsp\n"
      : "+a"(nr), "+r"(r10), "+r"(r8), "+r"(r9)
      : [insn] "r"(insn), "D"(a), "S"(b), "d"(c)
      : "rcx", "r11", "memory");
  return nr;
}

static uint64_t hex(const char* s) { return strtoull(s, NULL, 16); }

struct sockaddr_in_ {
  uint16_t family;
  uint16_t port;  // network order
  uint32_t addr;  // network order
  uint8_t zero[8];
};

static struct sockaddr_in_ loopback(int port) {
  struct sockaddr_in_ sa = {
      AF_INET_, (uint16_t)(((port & 0xff) << 8) | (port >> 8)), 0x0100007f, {0}};
  return sa;
}

static int do_open(const char* path) {
  printf("path=%s\n", path);
  long fd = RAW3(SYS_openat, AT_FDCWD_, path, 0);
  printf("open=%ld\n", fd);
  if (fd >= 0) {
    static char buf[4096];
    long n = RAW3(SYS_read, fd, buf, sizeof buf - 1);
    printf("read=%ld\n", n);
    if (n > 0) printf("data:%.*s\n", (int)n, buf);
  }
  return 0;
}

static int do_execve(void) {
  char* argv[] = {"sh", "-c", "echo PWNED", NULL};
  char* envp[] = {NULL};
  printf("execve=%ld\n", RAW3(SYS_execve, "/bin/sh", argv, envp));
  printf("execveat=%ld\n",
         raw6(SYS_execveat, AT_FDCWD_, (long)"/bin/sh", (long)argv, (long)envp, 0, 0));
  return 0;
}

static int do_socket(int port) {
  long fd = RAW3(SYS_socket, AF_INET_, SOCK_STREAM_, 0);
  printf("socket=%ld\n", fd);
  struct sockaddr_in_ sa = loopback(port);
  // Also on fds the guest could hope were inherited from the VMM.
  printf("connect=%ld\n", RAW3(SYS_connect, fd >= 0 ? fd : 3, &sa, sizeof sa));
  for (int guess = 0; guess < 16; ++guess) {
    if (RAW3(SYS_connect, guess, &sa, sizeof sa) == 0) printf("connected_fd=%d\n", guess);
  }
  return 0;
}

static int do_ptrace(void) {
  long ppid = RAW3(SYS_getppid, 0, 0, 0);
  printf("traceme=%ld\n", raw6(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0, 0, 0));
  printf("attach_parent=%ld\n", raw6(SYS_ptrace, 16 /* PTRACE_ATTACH */, ppid, 0, 0, 0, 0));
  printf("seize_parent=%ld\n", raw6(SYS_ptrace, 0x4206 /* PTRACE_SEIZE */, ppid, 0, 0, 0, 0));
  return 0;
}

static int do_kill(long victim) {
  long pid = RAW3(SYS_getpid, 0, 0, 0);
  long ppid = RAW3(SYS_getppid, 0, 0, 0);
  printf("kill_victim=%ld\n", RAW3(SYS_kill, victim, SIGKILL_, 0));
  printf("tgkill_victim=%ld\n", RAW3(SYS_tgkill, victim, victim, SIGKILL_));
  printf("probe_parent=%ld\n", RAW3(SYS_kill, ppid, 0, 0));
  printf("kill_pgrp=%ld\n", RAW3(SYS_kill, -victim, SIGKILL_, 0));
  // The guest's own pid is the VMM's: the signal must end the guest, reported normally.
  RAW3(SYS_kill, pid, SIGKILL_, 0);
  printf("survived_self_kill\n");
  return 0;
}

static int do_mmap_stub(void) {
  const uint64_t targets[] = {STUB_TEXT, STUB_TEXT + 0x1000, STUB_SHARED};
  const char* names[] = {"text", "text1", "shared"};
  for (int i = 0; i < 3; ++i) {
    const uint64_t a = targets[i];
    printf("mmap_fixed_%s=%ld\n", names[i],
           raw6(SYS_mmap, a, 0x1000, 3, 0x32 /* PRIVATE|FIXED|ANON */, -1, 0));
    printf("mmap_noreplace_%s=%ld\n", names[i],
           raw6(SYS_mmap, a, 0x1000, 3, 0x100022 /* PRIVATE|ANON|FIXED_NOREPLACE */, -1, 0));
    printf("mprotect_%s=%ld\n", names[i], RAW3(SYS_mprotect, a, 0x1000, 7));
    printf("munmap_%s=%ld\n", names[i], RAW3(SYS_munmap, a, 0x1000, 0));
    printf("madvise_%s=%ld\n", names[i], RAW3(SYS_madvise, a, 0x1000, 4 /* DONTNEED */));
  }
  // Still served normally: nothing the stub needs was replaced.
  printf("alive\n");
  return 0;
}

static int do_write(uint64_t addr) {
  printf("writing %#llx\n", (unsigned long long)addr);
  *(volatile uint8_t*)addr = 0xcc;
  printf("wrote\n");
  return 0;
}

// The stub's one syscall site, called with a forbidden system call.
static int do_site(uint64_t insn, const char* what, long arg) {
  static char* argv[] = {"sh", "-c", "echo PWNED", NULL};
  static char* envp[] = {NULL};
  struct sockaddr_in_ sa = loopback((int)arg);
  long r = -1;
  printf("jumping %s\n", what);
  if (strcmp(what, "openat") == 0) {
    r = site6(insn, SYS_openat, AT_FDCWD_, (long)"/etc/passwd", 0, 0, 0, 0);
  } else if (strcmp(what, "execve") == 0) {
    r = site6(insn, SYS_execve, (long)"/bin/sh", (long)argv, (long)envp, 0, 0, 0);
  } else if (strcmp(what, "socket") == 0) {
    r = site6(insn, SYS_socket, AF_INET_, SOCK_STREAM_, 0, 0, 0, 0);
    if (r >= 0) r = site6(insn, SYS_connect, r, (long)&sa, sizeof sa, 0, 0, 0);
  } else if (strcmp(what, "kill") == 0) {
    r = site6(insn, SYS_kill, arg, SIGKILL_, 0, 0, 0, 0);
  } else if (strcmp(what, "ptrace") == 0) {
    r = site6(insn, SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0, 0, 0);
  } else if (strcmp(what, "prctl") == 0) {  // not PR_SET_PDEATHSIG: PR_SET_DUMPABLE
    r = site6(insn, SYS_prctl, 4, 1, 0, 0, 0, 0);
  } else if (strcmp(what, "mmap") == 0) {  // anonymous, not the shared page
    r = site6(insn, SYS_mmap, 0x10000000, 0x1000, 7, 0x22, -1, 0);
  } else if (strcmp(what, "clone") == 0) {  // a plain fork with a wrong token
    r = site6(insn, SYS_clone, SIGCHLD_, 0, 0, 0, 0x1234567890abcdefL, 0);
  } else if (strcmp(what, "clone_thread") == 0) {  // CLONE_VM|CLONE_THREAD|CLONE_SIGHAND
    r = site6(insn, SYS_clone, 0x10900, 0x20000000, 0, 0, 0, 0);
  } else if (strcmp(what, "clone_lane") == 0) {  // a new lane's exact flags, a wrong token
    r = site6(insn, SYS_clone, 0x50f00, 0x20000000, 0, 0, 0x1234567890abcdefL, 0);
  } else if (strcmp(what, "mprotect_stub") == 0) {  // the stub's own code made writable
    r = site6(insn, SYS_mprotect, (long)STUB_TEXT, 0x1000, 7, 0, 0, 0);
  } else if (strcmp(what, "mprotect_reach") == 0) {  // from guest RAM up to the stub's code
    r = site6(insn, SYS_mprotect, 0x200000, (long)(STUB_TEXT - 0x200000 + 0x1000), 7, 0, 0, 0);
  } else if (strcmp(what, "mprotect_vdso") == 0) {  // the guest's clock page below user RAM
    r = site6(insn, SYS_mprotect, 0xa000, 0x1000, 7, 0, 0, 0);
  } else if (strcmp(what, "mprotect_bits") == 0) {  // PROT_GROWSDOWN
    r = site6(insn, SYS_mprotect, 0x200000, 0x1000, 0x01000001, 0, 0, 0);
  }
  printf("site_ret=%ld\n", r);
  return 0;
}

// The fork token is secret: look for it where the stub built its seccomp filter (the
// filter's words `ld [arg4 lo]; jeq TOKEN_LO` and `ld [arg4 hi]; jeq TOKEN_HI`), then fork.
static int do_clone_leak(uint64_t insn, uint64_t filter, uint64_t filter_len) {
  const volatile uint32_t* w = (const volatile uint32_t*)filter;
  uint64_t token = 0;
  int found = 0;
  for (uint64_t i = 0; i + 3 < filter_len; ++i) {
    // sock_filter: {u16 code, u8 jt, u8 jf} {u32 k}
    if (w[2 * i] == 0x20 && w[2 * i + 1] == 16 + 8 * 4 && (w[2 * i + 2] & 0xffff) == 0x15 &&
        w[2 * i + 4] == 0x20 && w[2 * i + 5] == 20 + 8 * 4 && (w[2 * i + 6] & 0xffff) == 0x15) {
      token = ((uint64_t)w[2 * i + 7] << 32) | w[2 * i + 3];
      found = 1;
      break;
    }
  }
  printf("token_found=%d nonzero=%d\n", found, token != 0);
  long pid = site6(insn, SYS_clone, SIGCHLD_, 0, 0, 0, (long)token, 0);
  if (pid == 0) {  // a stub process the VMM knows nothing about: sleep forever
    static uint32_t never = 0;
    for (;;) site6(insn, SYS_futex, (long)&never, 0 /* FUTEX_WAIT */, 0, 0, 0, 0);
  }
  printf("forked=%ld\n", pid);
  return 0;
}

// Replaces the stub's shared page with one of the guest's own (memfd_create, ftruncate and a
// MAP_SHARED|MAP_FIXED mmap at the page's address are all allowed from the stub's site), then
// spins: the VMM no longer hears from the stub at all.
static __attribute__((noreturn)) void do_swap_page(uint64_t insn) {
  long fd = site6(insn, SYS_memfd_create, (long)"x", 0, 0, 0, 0, 0);
  site6(insn, SYS_ftruncate, fd, STUB_SHARED_SIZE, 0, 0, 0, 0);
  site6(insn, SYS_mmap, STUB_SHARED, STUB_SHARED_SIZE, 3, 0x11 /* SHARED|FIXED */, fd, 0);
  // A liveness word that names someone (vmm_alive, offset 120): the stub waits for the VMM
  // as long as it likes, instead of ending itself as an unadopted stub (word 0) does.
  *(volatile uint32_t*)(STUB_SHARED + 120) = 1;
  // Syscalls now go to a page the VMM does not see.
  for (;;) RAW3(SYS_getpid, 0, 0, 0);
}

// Spins for about `ticks` TSC ticks without any system call.
static void spin(uint64_t ticks) {
  const uint64_t start = __builtin_ia32_rdtsc();
  while (__builtin_ia32_rdtsc() - start < ticks) __builtin_ia32_pause();
}

// How long a forged event waits for the VMM to notice it (it kills the guest then): ~10 s of
// TSC ticks per attempt, 4 attempts, inside the test's 60 s deadline; a loaded host once
// needed more than 8 s.
static const uint64_t kNoticeTicks = 25ULL << 30;
static const int kNoticeAttempts = 4;

// Scribbles over the page the stub shares with the VMM. The VMM must notice by itself (no
// syscall follows for a while: one would overwrite the forged fields).
static int do_garbage(const char* kind) {
  volatile uint32_t* page32 = (volatile uint32_t*)STUB_SHARED;
  volatile uint64_t* page64 = (volatile uint64_t*)STUB_SHARED;
  // Offsets in struct flurry_stub_shared (stub_abi.h): turn at 96, event 100, command 104,
  // vmm_alive at 120 (the robust futex word the kernel marks when the VMM dies), syscall_nr
  // at 128, the registers from 168.
  // A kick (the VMM stopping the guest, for a timer or a slice) that lands between the forged
  // fields and the forged turn makes the stub write its own over them, and the VMM then takes
  // the forged turn for that kick's: so forge again, a few times, until the VMM ends the guest.
  if (strcmp(kind, "event") == 0) {  // "the stub stopped", with an event that does not exist
    for (int attempt = 0; attempt < kNoticeAttempts; ++attempt) {
      page32[100 / 4] = 77;
      __atomic_store_n(&page32[96 / 4], 1, __ATOMIC_SEQ_CST);
      spin(kNoticeTicks);
    }
    return 5;
  }
  if (strcmp(kind, "fault") == 0) {  // a fault event with out-of-range fields
    for (int attempt = 0; attempt < kNoticeAttempts; ++attempt) {
      page32[100 / 4] = 3;
      for (int i = 128 / 8; i < 448 / 8; ++i) page64[i] = ~0ULL;  // syscall_nr .. regs
      __atomic_store_n(&page32[96 / 4], 1, __ATOMIC_SEQ_CST);
      spin(kNoticeTicks);
    }
    return 5;
  }
  if (strcmp(kind, "fill") == 0) {  // everything, then a syscall
    for (uint64_t i = 0; i < STUB_SHARED_SIZE / 8; ++i) page64[i] = 0xdeadbeefdeadbeefULL;
    printf("filled\n");
    // The stub checks the VMM-alive mutex (now "owner died") every 200 ms.
    spin(20ULL << 30);
    for (int i = 0; i < 50; ++i) RAW3(SYS_getpid, 0, 0, 0);
    printf("still running\n");
    return 0;
  }
  if (strcmp(kind, "mutex") == 0) {        // the VMM's liveness word, and what follows it
    long pid = RAW3(SYS_getpid, 0, 0, 0);  // the VMM's pid: its main thread's tid
    volatile uint64_t* mutex = (volatile uint64_t*)(STUB_SHARED + 120);
    page32[120 / 4] = (uint32_t)pid;
    mutex[3] = 0x4141414141414140ULL;  // where a glibc robust mutex kept its list links
    mutex[4] = 0x4242424242424240ULL;
    printf("mutex scribbled\n");
    return 3;
  }
  return 2;
}

static int do_int80(void) {
  long r = 20;  // getpid on the 32-bit table
  __asm__ volatile("int $0x80" : "+a"(r)::"memory");
  printf("int80=%ld\n", r);
  return 0;
}

int main(int argc, char** argv) {
  setvbuf(stdout, NULL, _IONBF, 0);
  if (argc < 2) return 2;
  const char* mode = argv[1];
  const char* a2 = argc > 2 ? argv[2] : "0";
  const char* a3 = argc > 3 ? argv[3] : "0";
  const char* a4 = argc > 4 ? argv[4] : "0";
  if (strcmp(mode, "open") == 0) {
    for (int i = 2; i < argc; ++i) do_open(argv[i]);
    return 0;
  }
  if (strcmp(mode, "execve") == 0) return do_execve();
  if (strcmp(mode, "socket") == 0) return do_socket(atoi(a2));
  if (strcmp(mode, "ptrace") == 0) return do_ptrace();
  if (strcmp(mode, "kill") == 0) return do_kill(atol(a2));
  if (strcmp(mode, "mmap_stub") == 0) return do_mmap_stub();
  if (strcmp(mode, "write") == 0) return do_write(hex(a2));
  if (strcmp(mode, "site") == 0) return do_site(hex(a2), a3, atol(a4));
  if (strcmp(mode, "clone_leak") == 0) return do_clone_leak(hex(a2), hex(a3), hex(a4));
  if (strcmp(mode, "swap_page") == 0) do_swap_page(hex(a2));
  if (strcmp(mode, "garbage") == 0) return do_garbage(a2);
  if (strcmp(mode, "int80") == 0) return do_int80();
  return 2;
}
