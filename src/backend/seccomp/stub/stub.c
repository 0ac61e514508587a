/* The seccomp backend's stub: the host process a guest runs in when flurry has no KVM.
 *
 * Freestanding (no libc), linked at FLURRY_STUB_TEXT_ADDR, embedded in the flurry binary and
 * exec'd from a memfd by the VMM (src/backend/seccomp/stub_process.cc). At start it:
 *   1. maps the page shared with the VMM (fd FLURRY_STUB_SHARED_FD) at FLURRY_STUB_SHARED_ADDR,
 *   2. maps guest RAM (private, read/write/execute) at the guest's own addresses, and the
 *      guest vDSO's pages,
 *   3. installs its signal handlers on an alternate stack (never the guest's stack),
 *   4. installs a seccomp filter: a syscall from any address but the stub's one syscall
 *      instruction traps (SIGSYS); from there only the stub's own few calls are allowed, with
 *      their arguments pinned where it matters; anything else kills the process,
 *   5. makes one trapped syscall of its own, so that from then on it lives in a signal handler
 *      whose frame holds the guest's registers: the first RESUME jumps to the guest's entry.
 *
 * Every stop (syscall, fault, kick) copies the guest's registers to the shared page, hands the
 * page to the VMM (futex) and carries out the VMM's commands until one says RESUME.
 *
 * Lanes: the stub may run several threads (CMD_ADD_LANE), each a lane with its own hand-off page
 * (page k of the shared area), its own alternate signal stack and its own small start stack.
 * A handler knows its lane from the alternate stack it runs on. CMD_END_LANE ends a lane's thread
 * (never lane 0's, the main thread).
 *
 * The guest shares this address space: it can read and write everything here, and jump
 * anywhere. What keeps it in: the filter (all its syscalls trap to the VMM; the stub's site
 * allows only harmless calls), no file descriptors but the shared page's, empty namespaces,
 * no_new_privs. The VMM treats the shared page as untrusted input. */
#include <asm/errno.h>
#include <asm/sigcontext.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/futex.h>
#include <linux/mman.h>
#include <linux/prctl.h>
#include <linux/seccomp.h>
#include <linux/time.h>
#include <linux/unistd.h>
#include <stddef.h>
#include <stdint.h>

#include "stub_abi.h"

#define SIGILL 4
#define SIGTRAP 5
#define SIGBUS 7
#define SIGFPE 8
#define SIGSEGV 11
#define SIGALRM 14
#define SIGCHLD 17
#define SIGSYS 31
#define SA_SIGINFO 0x4
#define SA_ONSTACK 0x08000000
#define SA_RESTORER 0x04000000
#define SIG_IGN_HANDLER ((void*)1)
#define ARCH_SET_GS 0x1001
#define ARCH_SET_FS 0x1002
#define ITIMER_REAL 0
#define FUTEX_OWNER_DIED_BIT 0x40000000u
#define FP_XSTATE_MAGIC1_VALUE 0x46505853u
#define WATCHDOG_MS 200

typedef uint64_t u64;

/* ---- the one syscall site ----------------------------------------------------------------
 * Every syscall the stub makes goes through the `syscall` at flurry_stub_syscall_insn; the
 * filter allows only calls whose return address is flurry_stub_syscall_ret. */
long flurry_stub_syscall6(long nr, long a, long b, long c, long d, long e, long f);
extern char flurry_stub_syscall_insn[];
extern char flurry_stub_syscall_ret[];
extern char flurry_stub_restorer[];
__asm__(
    ".text\n"
    ".globl flurry_stub_syscall6\n"
    "flurry_stub_syscall6:\n"
    "  mov %rdi, %rax\n"
    "  mov %rsi, %rdi\n"
    "  mov %rdx, %rsi\n"
    "  mov %rcx, %rdx\n"
    "  mov %r8, %r10\n"
    "  mov %r9, %r8\n"
    "  mov 8(%rsp), %r9\n"
    ".globl flurry_stub_syscall_insn\n"
    "flurry_stub_syscall_insn:\n"
    "  syscall\n"
    ".globl flurry_stub_syscall_ret\n"
    "flurry_stub_syscall_ret:\n"
    "  ret\n"
    /* Signal return: rsp points just past the frame's return address, as rt_sigreturn wants. */
    ".globl flurry_stub_restorer\n"
    "flurry_stub_restorer:\n"
    "  mov $15, %eax\n"
    "  jmp flurry_stub_syscall_insn\n");

#define SYS0(n) flurry_stub_syscall6((n), 0, 0, 0, 0, 0, 0)
#define SYS1(n, a) flurry_stub_syscall6((n), (long)(a), 0, 0, 0, 0, 0)
#define SYS2(n, a, b) flurry_stub_syscall6((n), (long)(a), (long)(b), 0, 0, 0, 0)
#define SYS3(n, a, b, c) flurry_stub_syscall6((n), (long)(a), (long)(b), (long)(c), 0, 0, 0)
#define SYS4(n, a, b, c, d) \
  flurry_stub_syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), 0, 0)
#define SYS6(n, a, b, c, d, e, f) \
  flurry_stub_syscall6((n), (long)(a), (long)(b), (long)(c), (long)(d), (long)(e), (long)(f))

static __attribute__((noreturn)) void die(int code) {
  for (;;) SYS1(__NR_exit_group, code);
}

/* The compiler may call these for struct copies. */
void* memcpy(void* dst, const void* src, size_t n) {
  unsigned char* d = dst;
  const unsigned char* s = src;
  while (n--) *d++ = *s++;
  return dst;
}
void* memset(void* dst, int c, size_t n) {
  unsigned char* d = dst;
  while (n--) *d++ = (unsigned char)c;
  return dst;
}

/* ---- kernel structures (x86-64) ------------------------------------------------------------ */
struct stub_sigaction {
  void* handler;
  unsigned long flags;
  void* restorer;
  u64 mask;
};
struct stub_stack {
  void* sp;
  int flags;
  int pad;
  u64 size;
};
struct stub_ucontext {
  u64 flags;
  void* link;
  struct stub_stack stack;
  struct sigcontext mc;
  u64 sigmask;
};
struct stub_siginfo {
  int signo;
  int err;
  int code;
  int pad;
  union {
    void* addr; /* SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP */
    struct {
      void* call_addr;
      int syscall;
      unsigned int arch;
    } sys; /* SIGSYS */
  } u;
};
struct stub_itimerval {
  struct {
    long sec, usec;
  } interval, value;
};

/* Page 0: the setup block, vmm_alive and the doorbell. LANE(k): lane k's hand-off page. */
#define SHARED ((volatile struct flurry_stub_shared*)FLURRY_STUB_SHARED_ADDR)
#define LANE(k) \
  ((volatile struct flurry_stub_shared*)(FLURRY_STUB_SHARED_ADDR + (u64)(k)*FLURRY_STUB_LANE_SIZE))

#define ALTSTACK_SIZE (64 * 1024)
#define START_STACK_SIZE 4096
static unsigned char g_altstacks[FLURRY_STUB_MAX_LANES][ALTSTACK_SIZE] __attribute__((aligned(64)));
/* Where a new lane's thread starts (clone's child stack): only its start code runs here. */
static unsigned char g_start_stacks[FLURRY_STUB_MAX_LANES][START_STACK_SIZE]
    __attribute__((aligned(64)));
/* Per lane: set at the lane's own first trap (before any guest code runs on it). */
static int g_started[FLURRY_STUB_MAX_LANES];
/* Per lane: a thread was started for it (lane 0: the main thread). */
static int g_lane_used[FLURRY_STUB_MAX_LANES] = {1};

/* The lane whose alternate signal stack holds `p` (an address on the handler's stack). */
static int lane_of_stack(const void* p) {
  const u64 offset = (u64)p - (u64)g_altstacks;
  if ((u64)p < (u64)g_altstacks || offset >= sizeof g_altstacks) die(14);
  return (int)(offset / ALTSTACK_SIZE);
}

/* ---- liveness of the VMM --------------------------------------------------------------------- */
static void check_vmm_alive(void) {
  uint32_t word = SHARED->vmm_alive;
  if (word & FUTEX_OWNER_DIED_BIT) die(1);
}

/* A stub no VMM has adopted holds 0 in its word. The VMM a fork made for it adopts it within
 * milliseconds; when that VMM died before it could (a page server killed right after the
 * fork), nobody ever will, and nothing else would end it (an untied fork has no parent-death
 * signal): it ends itself once its word has stayed 0 for UNADOPTED_MS. Counted by the callers'
 * periods: the watchdog's ticks, and the hand-off's timed-out waits (a forked stub waits there
 * inside its signal handler, where SIGALRM is blocked). */
#define UNADOPTED_MS 10000
static uint32_t g_unadopted_ms;

static void check_adopted(uint32_t elapsed_ms) {
  if (SHARED->vmm_alive != 0) {
    g_unadopted_ms = 0;
  } else if ((g_unadopted_ms += elapsed_ms) > UNADOPTED_MS) {
    die(1);
  }
}

static void start_watchdog(void) {
  struct stub_itimerval t = {{0, WATCHDOG_MS * 1000}, {0, WATCHDOG_MS * 1000}};
  SYS3(__NR_setitimer, ITIMER_REAL, &t, 0);
}

/* ---- the hand-off -------------------------------------------------------------------------- */
/* How long to spin for the VMM's answer before sleeping (TSC ticks; ~20-50 us). */
#define SPIN_TICKS 60000ULL

static void hand_off(volatile struct flurry_stub_shared* s, uint32_t event) {
  s->event = event;
  __atomic_store_n(&s->turn, FLURRY_STUB_TURN_VMM, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&s->vmm_waiting, __ATOMIC_SEQ_CST)) {
    SYS3(__NR_futex, &s->turn, FUTEX_WAKE, 1);
  }
  /* The doorbell, for a VMM waiting on any lane: rung after `turn` is stored (no lost
   * wake-up: docs/protocols/stub.md, "Waiting for any lane"). */
  volatile struct flurry_stub_shared* page0 = SHARED;
  __atomic_add_fetch(&page0->doorbell, 1, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&page0->vmm_waiting_any, __ATOMIC_SEQ_CST)) {
    SYS3(__NR_futex, &page0->doorbell, FUTEX_WAKE, 0x7fffffff);
  }
  /* Spin briefly (the VMM usually answers within microseconds), then sleep. */
  const u64 start = __builtin_ia32_rdtsc();
  while (__builtin_ia32_rdtsc() - start < SPIN_TICKS) {
    if (__atomic_load_n(&s->turn, __ATOMIC_ACQUIRE) == FLURRY_STUB_TURN_STUB) return;
    __builtin_ia32_pause();
  }
  struct timespec timeout = {0, 100 * 1000 * 1000};
  for (;;) {
    __atomic_store_n(&s->stub_waiting, 1, __ATOMIC_SEQ_CST);
    if (__atomic_load_n(&s->turn, __ATOMIC_SEQ_CST) == FLURRY_STUB_TURN_STUB) break;
    const long waited = SYS4(__NR_futex, &s->turn, FUTEX_WAIT, FLURRY_STUB_TURN_VMM, &timeout);
    if (__atomic_load_n(&s->turn, __ATOMIC_SEQ_CST) == FLURRY_STUB_TURN_STUB) break;
    check_vmm_alive();
    if (waited == -ETIMEDOUT) check_adopted(100);
  }
  __atomic_store_n(&s->stub_waiting, 0, __ATOMIC_SEQ_CST);
}

static void save_regs(const struct sigcontext* mc, volatile struct flurry_stub_regs* r) {
  r->rax = mc->rax;
  r->rbx = mc->rbx;
  r->rcx = mc->rcx;
  r->rdx = mc->rdx;
  r->rsi = mc->rsi;
  r->rdi = mc->rdi;
  r->rsp = mc->rsp;
  r->rbp = mc->rbp;
  r->r8 = mc->r8;
  r->r9 = mc->r9;
  r->r10 = mc->r10;
  r->r11 = mc->r11;
  r->r12 = mc->r12;
  r->r13 = mc->r13;
  r->r14 = mc->r14;
  r->r15 = mc->r15;
  r->rip = mc->rip;
  r->rflags = mc->eflags;
}

static void load_regs(struct sigcontext* mc, const volatile struct flurry_stub_regs* r) {
  mc->rax = r->rax;
  mc->rbx = r->rbx;
  mc->rcx = r->rcx;
  mc->rdx = r->rdx;
  mc->rsi = r->rsi;
  mc->rdi = r->rdi;
  mc->rsp = r->rsp;
  mc->rbp = r->rbp;
  mc->r8 = r->r8;
  mc->r9 = r->r9;
  mc->r10 = r->r10;
  mc->r11 = r->r11;
  mc->r12 = r->r12;
  mc->r13 = r->r13;
  mc->r14 = r->r14;
  mc->r15 = r->r15;
  mc->rip = r->rip;
  mc->eflags = r->rflags;
}

/* The XSAVE image in the signal frame: its size, or 512 (FXSAVE only). */
static uint32_t frame_xsave_size(const unsigned char* fp) {
  const struct _fpx_sw_bytes* sw = (const struct _fpx_sw_bytes*)(fp + 464);
  if (sw->magic1 != FP_XSTATE_MAGIC1_VALUE) return 512;
  return sw->xstate_size;
}

static void save_fpu(volatile struct flurry_stub_shared* s, const struct sigcontext* mc) {
  const unsigned char* fp = (const unsigned char*)mc->fpstate;
  if (fp == 0) {
    s->xsave_size = 0;
    return;
  }
  uint32_t size = frame_xsave_size(fp);
  if (size > FLURRY_STUB_XSAVE_MAX) size = FLURRY_STUB_XSAVE_MAX;
  for (uint32_t i = 0; i < size; ++i) s->xsave[i] = (i >= 464 && i < 512) ? 0 : fp[i];
  s->xsave_size = size;
}

static void load_fpu(volatile struct flurry_stub_shared* s, struct sigcontext* mc) {
  unsigned char* fp = (unsigned char*)mc->fpstate;
  if (fp == 0) return;
  const uint32_t frame = frame_xsave_size(fp);
  uint32_t size = s->xsave_size;
  if (size > FLURRY_STUB_XSAVE_MAX) size = FLURRY_STUB_XSAVE_MAX;
  /* Bytes 464..511 are the kernel's (the xstate description it checks at sigreturn). */
  for (uint32_t i = 0; i < frame; ++i) {
    if (i >= 464 && i < 512) continue;
    fp[i] = i < size ? s->xsave[i] : 0;
  }
}

/* ---- fork ------------------------------------------------------------------------------------ */
/* In a new child (which has only the forking thread: lane `lane`): replace the inherited shared
 * area (still the parent's) with a fresh one of its own; the caller announces itself on the
 * lane's page. The VMM takes the memfd (fd 0) with pidfd_getfd. */
static void become_forked_child(int lane, int die_with_parent) {
  volatile struct flurry_stub_shared* s = SHARED;
  /* Only the setup block is carried over. */
  const u64 magic = s->magic, ram_size = s->ram_size, user_base = s->user_base;
  const u64 huge_start = s->huge_start, huge_end = s->huge_end;
  const u64 vvar = s->vvar_addr, vdso = s->vdso_addr, vdso_size = s->vdso_size;
  const u64 guard_start = s->guard_start, guard_end = s->guard_end;
  const uint32_t version = s->version;
  SYS3(__NR_close_range, 0, ~0u, 0);
  long fd = SYS2(__NR_memfd_create, "flurry-stub", 0);
  if (fd != 0) die(2);
  if (SYS2(__NR_ftruncate, 0, FLURRY_STUB_SHARED_SIZE) != 0) die(2);
  long addr = SYS6(__NR_mmap, FLURRY_STUB_SHARED_ADDR, FLURRY_STUB_SHARED_SIZE,
                   PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, 0, 0);
  if (addr != (long)FLURRY_STUB_SHARED_ADDR) die(2);
  s->magic = magic;
  s->version = version;
  s->ram_size = ram_size;
  s->user_base = user_base;
  s->huge_start = huge_start;
  s->huge_end = huge_end;
  s->vvar_addr = vvar;
  s->vdso_addr = vdso;
  s->vdso_size = vdso_size;
  s->guard_start = guard_start;
  s->guard_end = guard_end;
  /* Nobody has adopted this stub yet: its own count of that starts now. */
  g_unadopted_ms = 0;
  /* fork() copied only this thread: the other lanes are gone, their numbers free again. */
  for (int k = 0; k < FLURRY_STUB_MAX_LANES; ++k) {
    g_lane_used[k] = k == lane;
    if (k != lane) g_started[k] = 0;
  }
  /* Die with the stub that forked us, as the VMM that will drive us dies with the VMM that
   * forked it (a detached clone outlives its snapshot). */
  if (die_with_parent) SYS2(__NR_prctl, PR_SET_PDEATHSIG, 9);
  start_watchdog();
}

/* clone(flags, stack, 0, 0, tls = the token at `token`, 0) through the stub's site. The token
 * stays out of the stub's memory (which the guest can read): it goes from the shared page
 * straight into r8, which is cleared right after, in parent and child alike (a new lane's
 * thread clears it in flurry_stub_lane_entry, where the site's `ret` takes it). */
static long clone_with_token(long flags, void* stack, volatile const u64* token) {
  long ret = __NR_clone;
  __asm__ volatile(
      "sub $128, %%rsp\n"
      "xor %%edx, %%edx\n"
      "xor %%r10d, %%r10d\n"
      "xor %%r9d, %%r9d\n"
      "mov (%[token]), %%r8\n"
      "call flurry_stub_syscall_insn\n"
      "xor %%r8d, %%r8d\n"
      "add $128, %%rsp\n"
      : "+a"(ret)
      : "D"(flags), "S"(stack), [token] "r"(token)
      : "rdx", "rcx", "r8", "r9", "r10", "r11", "memory");
  return ret;
}

/* ---- lanes ----------------------------------------------------------------------------------- */
/* A new lane's thread begins here: clone() left it on its start stack, whose top word is this
 * address, and the site's `ret` popped it. r8 still holds the fork token: cleared first. */
void flurry_stub_lane_start(void);
extern char flurry_stub_lane_entry[];
__asm__(
    ".text\n"
    ".globl flurry_stub_lane_entry\n"
    "flurry_stub_lane_entry:\n"
    "  xor %r8d, %r8d\n"
    "  xor %r9d, %r9d\n"
    "  xor %r10d, %r10d\n"
    "  xor %ebp, %ebp\n"
    "  and $-16, %rsp\n"
    "  call flurry_stub_lane_start\n"
    "  ud2\n");

static int lane_of_start_stack(const void* p) {
  const u64 offset = (u64)p - (u64)g_start_stacks;
  if ((u64)p < (u64)g_start_stacks || offset >= sizeof g_start_stacks) die(14);
  return (int)(offset / START_STACK_SIZE);
}

void flurry_stub_lane_start(void) {
  int here;
  const int lane = lane_of_start_stack(&here);
  /* A thread made with CLONE_VM starts without an alternate stack: its lane's, before any
   * signal can come (all are blocked, as they were in the handler that cloned it). */
  struct stub_stack alt = {g_altstacks[lane], 0, 0, ALTSTACK_SIZE};
  if (SYS2(__NR_sigaltstack, &alt, 0) != 0) die(9);
  /* Everything but the kick: a forced SIGSYS while blocked would kill the process, and a kick
   * must wait until the lane runs guest code (its READY handler unblocks it in the frame). */
  u64 mask = 1ULL << (FLURRY_STUB_KICK_SIGNAL - 1);
  SYS4(__NR_rt_sigprocmask, 2 /* SIG_SETMASK */, &mask, 0, 8);
  /* As the main thread's start: a trapped syscall; its handler reports READY on this lane's
   * page, and the first RESUME (with LOAD_REGS) leaves for the guest's code. */
  __asm__ volatile(
      "xor %%ebx, %%ebx\n xor %%r12d, %%r12d\n xor %%r13d, %%r13d\n"
      "xor %%r14d, %%r14d\n xor %%r15d, %%r15d\n mov $39, %%eax\n syscall" ::
          : "rax", "rbx", "r12", "r13", "r14", "r15", "rcx", "r11", "memory");
  die(11); /* a RESUME without LOAD_REGS */
}

/* CMD_ADD_LANE on a stopped lane: starts lane args[0] as a new thread. */
static long add_lane(volatile struct flurry_stub_shared* s) {
  const u64 lane = s->args[0];
  if (lane == 0 || lane >= FLURRY_STUB_MAX_LANES) return -22; /* EINVAL */
  if (g_lane_used[lane]) return -17;                          /* EEXIST */
  g_started[lane] = 0;
  /* The child's stack: the site's `ret` pops flurry_stub_lane_entry from its top word. */
  u64* top = (u64*)(g_start_stacks[lane] + START_STACK_SIZE - 16);
  top[0] = (u64)flurry_stub_lane_entry;
  top[1] = 0;
  long tid = clone_with_token(FLURRY_STUB_LANE_CLONE_FLAGS, top, &s->args[1]);
  if (tid > 0) g_lane_used[lane] = 1;
  return tid;
}

/* ---- the signal handler ------------------------------------------------------------------- */
static void on_signal(int sig, struct stub_siginfo* si, void* ucv) {
  struct stub_ucontext* uc = ucv;
  /* The handler runs on its lane's alternate stack. */
  const int lane = lane_of_stack(&uc);
  volatile struct flurry_stub_shared* s = LANE(lane);
  uint32_t event;
  if (sig == SIGALRM) {
    check_vmm_alive();
    check_adopted(WATCHDOG_MS);
    return;
  }
  if (sig == SIGSYS) {
    s->syscall_nr = (u64)(unsigned int)si->u.sys.syscall;
    if (!g_started[lane]) {
      g_started[lane] = 1;
      event = FLURRY_STUB_EVENT_READY; /* the lane's own first trap */
      uc->sigmask = 0;                 /* the guest's code runs with every signal unblocked */
    } else if (si->u.sys.arch != AUDIT_ARCH_X86_64) {
      event = FLURRY_STUB_EVENT_BAD_ARCH;
    } else {
      event = FLURRY_STUB_EVENT_SYSCALL;
    }
  } else if (sig == FLURRY_STUB_KICK_SIGNAL) {
    event = FLURRY_STUB_EVENT_KICKED;
  } else {
    event = FLURRY_STUB_EVENT_FAULT;
    s->signo = sig;
    s->si_code = si->code;
    s->fault_addr = (u64)si->u.addr;
    s->trapno = uc->mc.trapno;
    s->error_code = uc->mc.err;
  }
  save_regs(&uc->mc, &s->regs);
  for (;;) {
    hand_off(s, event);
    event = FLURRY_STUB_EVENT_DONE;
    switch (s->command) {
      case FLURRY_STUB_CMD_RESUME: {
        const uint32_t flags = s->resume_flags;
        if (flags & FLURRY_STUB_LOAD_REGS) load_regs(&uc->mc, &s->regs);
        if (flags & FLURRY_STUB_LOAD_FPU) load_fpu(s, &uc->mc);
        if (flags & FLURRY_STUB_LOAD_FS) SYS2(__NR_arch_prctl, ARCH_SET_FS, s->regs.fs_base);
        if (flags & FLURRY_STUB_LOAD_GS) SYS2(__NR_arch_prctl, ARCH_SET_GS, s->regs.gs_base);
        __atomic_store_n(&s->turn, FLURRY_STUB_TURN_GUEST, __ATOMIC_RELEASE);
        return;
      }
      case FLURRY_STUB_CMD_FORK: {
        const int die_with_parent = s->args[1] != 0;
        long pid = clone_with_token(SIGCHLD, 0, &s->args[0]);
        if (pid == 0) {
          become_forked_child(lane, die_with_parent);
          event = FLURRY_STUB_EVENT_FORKED;
          continue;
        }
        s->args[0] = 0;
        s->result = pid;
        continue;
      }
      case FLURRY_STUB_CMD_ADD_LANE:
        s->result = add_lane(s);
        s->args[1] = 0;
        continue;
      case FLURRY_STUB_CMD_END_LANE:
        /* Lane 0 is the main thread: it never ends alone (a zombie leader would still count in
         * /proc/PID/status, and the process's children are tied to it). */
        if (lane == 0) {
          s->result = -22; /* EINVAL */
          continue;
        }
        g_lane_used[lane] = 0;
        g_started[lane] = 0;
        for (;;) SYS1(__NR_exit, 0); /* this thread only; the VMM sees it gone in /proc */
      case FLURRY_STUB_CMD_MADVISE:
        s->result = SYS3(__NR_madvise, s->args[0], s->args[1], s->args[2]);
        continue;
      case FLURRY_STUB_CMD_MPROTECT:
        s->result = SYS3(__NR_mprotect, s->args[0], s->args[1], s->args[2]);
        continue;
      case FLURRY_STUB_CMD_SAVE_FPU:
        save_fpu(s, &uc->mc);
        s->result = 0;
        continue;
      case FLURRY_STUB_CMD_EXIT:
        die(0);
      case FLURRY_STUB_CMD_CLOSE_FDS:
        s->result = SYS3(__NR_close_range, 0, ~0u, 0);
        continue;
      default:
        s->result = -22; /* EINVAL */
        continue;
    }
  }
}

/* ---- setup ---------------------------------------------------------------------------------- */
static void install_handler(int sig) {
  struct stub_sigaction action;
  action.handler = (void*)on_signal;
  action.flags = SA_SIGINFO | SA_ONSTACK | SA_RESTORER;
  action.restorer = flurry_stub_restorer;
  action.mask = ~0ULL; /* nothing interrupts a stop */
  if (SYS4(__NR_rt_sigaction, sig, &action, 0, 8) != 0) die(3);
}

/* The filter, built at run time (jump offsets are counted from the next instruction). The IP
 * seccomp reports is the address after `syscall`. */
static struct sock_filter g_filter[128];
static unsigned g_filter_len;

static void emit(uint16_t code, uint32_t k, uint8_t jt, uint8_t jf) {
  if (g_filter_len >= sizeof g_filter / sizeof g_filter[0]) die(4);
  struct sock_filter insn = {code, jt, jf, k};
  g_filter[g_filter_len++] = insn;
}
#define LD(off) emit(BPF_LD | BPF_W | BPF_ABS, (off), 0, 0)
#define JEQ(v, t, f) emit(BPF_JMP | BPF_JEQ | BPF_K, (v), (t), (f))
#define JGE(v, t, f) emit(BPF_JMP | BPF_JGE | BPF_K, (v), (t), (f))
#define JSET(v, t, f) emit(BPF_JMP | BPF_JSET | BPF_K, (v), (t), (f))
#define RET(v) emit(BPF_RET | BPF_K, (v), 0, 0)
#define ARG_LO(n) (16 + 8 * (n))
#define ARG_HI(n) (20 + 8 * (n))

static void install_filter(u64 fork_token) {
  const u64 site = (u64)flurry_stub_syscall_ret;
  /* Not x86-64 (int 0x80 and friends): trap, the VMM reports it. */
  LD(4);
  JEQ(AUDIT_ARCH_X86_64, 1, 0);
  RET(SECCOMP_RET_TRAP);
  /* Not from the stub's site: the guest's syscall, served by the VMM. */
  LD(12);
  JEQ((uint32_t)(site >> 32), 1, 0);
  RET(SECCOMP_RET_TRAP);
  LD(8);
  JEQ((uint32_t)site, 1, 0);
  RET(SECCOMP_RET_TRAP);
  /* The stub's own calls. */
  LD(0);
  /* exit ends the calling thread only (CMD_END_LANE); the guest could end them all already
   * (exit_group). */
  const uint32_t plain[] = {__NR_futex,       __NR_rt_sigreturn,  __NR_exit_group,   __NR_exit,
                            __NR_setitimer,   __NR_close_range,   __NR_memfd_create, __NR_ftruncate,
                            __NR_sigaltstack, __NR_rt_sigprocmask};
  for (unsigned i = 0; i < sizeof plain / sizeof plain[0]; ++i) {
    JEQ(plain[i], 0, 1);
    RET(SECCOMP_RET_ALLOW);
  }
  /* arch_prctl: only ARCH_SET_FS / ARCH_SET_GS (no ARCH_MAP_VDSO_*, no CPUID faulting). */
  JEQ(__NR_arch_prctl, 0, 7);
  LD(ARG_HI(0));
  JEQ(0, 0, 4);
  LD(ARG_LO(0));
  JEQ(ARCH_SET_FS, 1, 0);
  JEQ(ARCH_SET_GS, 0, 1);
  RET(SECCOMP_RET_ALLOW);
  RET(SECCOMP_RET_KILL_PROCESS);
  /* madvise: only MADV_DONTNEED (the VMM's discard) — never HWPOISON and friends. */
  JEQ(__NR_madvise, 0, 6);
  LD(ARG_HI(2));
  JEQ(0, 0, 3);
  LD(ARG_LO(2));
  JEQ(4 /* MADV_DONTNEED */, 0, 1);
  RET(SECCOMP_RET_ALLOW);
  RET(SECCOMP_RET_KILL_PROCESS);
  /* mprotect: only in [2 MiB, 64 GiB) (guest user RAM; the stub's own code, data and shared
   * page lie far above, the guest's vDSO and clock page below), with a length below 64 GiB (no
   * reaching up there either) and plain PROT_* bits. */
  JEQ(__NR_mprotect, 0, 13);
  LD(ARG_HI(0));
  JGE(FLURRY_STUB_MPROTECT_LIMIT_HI, 10, 0);
  JEQ(0, 0, 2);
  LD(ARG_LO(0));
  JGE(FLURRY_STUB_MPROTECT_FLOOR, 0, 7);
  LD(ARG_HI(1));
  JGE(FLURRY_STUB_MPROTECT_LIMIT_HI, 5, 0);
  LD(ARG_HI(2));
  JEQ(0, 0, 3);
  LD(ARG_LO(2));
  JSET(~(uint32_t)(PROT_READ | PROT_WRITE | PROT_EXEC), 1, 0);
  RET(SECCOMP_RET_ALLOW);
  RET(SECCOMP_RET_KILL_PROCESS);
  /* prctl: only PR_SET_PDEATHSIG. */
  JEQ(__NR_prctl, 0, 4);
  LD(ARG_LO(0));
  JEQ(PR_SET_PDEATHSIG, 0, 1);
  RET(SECCOMP_RET_ALLOW);
  RET(SECCOMP_RET_KILL_PROCESS);
  /* mmap: only a shared read/write mapping of the shared area's size over the shared area
   * (addr, length, prot and flags pinned; the high halves of length/prot/flags must be 0). */
  JEQ(__NR_mmap, 0, 16);
  LD(ARG_HI(0));
  JEQ((uint32_t)(FLURRY_STUB_SHARED_ADDR >> 32), 0, 13);
  LD(ARG_LO(0));
  JEQ((uint32_t)FLURRY_STUB_SHARED_ADDR, 0, 11);
  LD(ARG_HI(1));
  JEQ(0, 0, 9);
  LD(ARG_LO(1));
  JEQ((uint32_t)FLURRY_STUB_SHARED_SIZE, 0, 7);
  LD(ARG_LO(2));
  JEQ(PROT_READ | PROT_WRITE, 0, 5);
  LD(ARG_HI(2));
  JEQ(0, 0, 3);
  LD(ARG_LO(3));
  JEQ(MAP_SHARED | MAP_FIXED, 0, 1);
  RET(SECCOMP_RET_ALLOW);
  RET(SECCOMP_RET_KILL_PROCESS);
  /* clone: only a plain fork (flags == SIGCHLD) or a new lane's thread (flags == exactly
   * FLURRY_STUB_LANE_CLONE_FLAGS), carrying the fork token as its tls argument (which the
   * kernel ignores without CLONE_SETTLS). */
  JEQ(__NR_clone, 0, 11);
  LD(ARG_HI(0));
  JEQ(0, 0, 8);
  LD(ARG_LO(0));
  JEQ(SIGCHLD, 1, 0);
  JEQ(FLURRY_STUB_LANE_CLONE_FLAGS, 0, 5);
  LD(ARG_LO(4));
  JEQ((uint32_t)fork_token, 0, 3);
  LD(ARG_HI(4));
  JEQ((uint32_t)(fork_token >> 32), 0, 1);
  RET(SECCOMP_RET_ALLOW);
  RET(SECCOMP_RET_KILL_PROCESS);
  RET(SECCOMP_RET_KILL_PROCESS);
  struct sock_fprog prog = {(unsigned short)g_filter_len, g_filter};
  if (SYS3(__NR_seccomp, SECCOMP_SET_MODE_FILTER, 0, &prog) != 0) die(4);
}
#undef LD
#undef JEQ
#undef JGE
#undef JSET
#undef RET

/* No capabilities left (a root VMM's stub would otherwise keep root's): what the filter lets
 * through can then do nothing privileged either. */
static void drop_capabilities(void) {
  struct {
    uint32_t version;
    int pid;
  } header = {0x20080522 /* _LINUX_CAPABILITY_VERSION_3 */, 0};
  struct {
    uint32_t effective, permitted, inheritable;
  } data[2] = {{0, 0, 0}, {0, 0, 0}};
  for (int cap = 0; cap < 64; ++cap) SYS2(__NR_prctl, PR_CAPBSET_DROP, cap);
  if (SYS2(__NR_capset, &header, data) != 0) die(12);
}

static void map_or_die(u64 addr, u64 len, long prot, long flags) {
  if (len == 0) return;
  long got = SYS6(__NR_mmap, addr, len, prot, flags, -1, 0);
  if (got != (long)addr) die(5);
}

void flurry_stub_main(void) {
  /* The shared page. */
  long got = SYS6(__NR_mmap, FLURRY_STUB_SHARED_ADDR, FLURRY_STUB_SHARED_SIZE,
                  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_FIXED, FLURRY_STUB_SHARED_FD, 0);
  if (got != (long)FLURRY_STUB_SHARED_ADDR) die(6);
  SYS3(__NR_close_range, 0, ~0u, 0);
  volatile struct flurry_stub_shared* s = SHARED;
  if (s->magic != FLURRY_STUB_MAGIC || s->version != FLURRY_STUB_VERSION) die(7);
  volatile u64 token = s->fork_token; /* volatile: wiped below, in its one stack slot */
  s->fork_token = 0;

  /* Guest memory and the guest vDSO's pages. */
  const long anon = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE;
  if (s->ram_size <= s->user_base) die(8);
  const long rwx = PROT_READ | PROT_WRITE | PROT_EXEC;
  if (s->guard_start >= s->user_base && s->guard_end <= s->ram_size &&
      s->guard_start < s->guard_end) {
    map_or_die(s->user_base, s->guard_start - s->user_base, rwx, anon);
    map_or_die(s->guard_end, s->ram_size - s->guard_end, rwx, anon);
  } else {
    map_or_die(s->user_base, s->ram_size - s->user_base, rwx, anon);
  }
  if (s->huge_end > s->huge_start) {
    SYS3(__NR_madvise, s->huge_start, s->huge_end - s->huge_start, 14 /* MADV_HUGEPAGE */);
  }
  s->uffd_fd = -1;
  if (s->setup_flags & FLURRY_STUB_SETUP_USERFAULTFD) {
    /* RAM filled on demand by the VMM (src/memory/lazy_pages.h), which takes this fd with
     * pidfd_getfd and asks the stub to close its own copy (CMD_CLOSE_FDS). User-mode faults
     * only: no privilege needed, and the guest's syscalls never touch memory in the kernel. */
    long fd = SYS1(__NR_userfaultfd,
                   02000000 /* O_CLOEXEC */ | 04000 /* O_NONBLOCK */ | 1 /* UFFD_USER_MODE_ONLY */);
    if (fd < 0) die(13);
    s->uffd_fd = fd;
  }
  map_or_die(s->vvar_addr, 4096, PROT_READ, anon);
  map_or_die(s->vdso_addr, s->vdso_size, PROT_READ | PROT_EXEC, anon);

  struct stub_stack alt = {g_altstacks[0], 0, 0, ALTSTACK_SIZE}; /* lane 0's */
  if (SYS2(__NR_sigaltstack, &alt, 0) != 0) die(9);
  const int handled[] = {SIGSYS, SIGSEGV, SIGBUS,  SIGFPE,
                         SIGILL, SIGTRAP, SIGALRM, FLURRY_STUB_KICK_SIGNAL};
  for (unsigned i = 0; i < sizeof handled / sizeof handled[0]; ++i) install_handler(handled[i]);
  /* Forked stubs are reaped by the kernel. */
  struct stub_sigaction ignore = {SIG_IGN_HANDLER, SA_RESTORER, flurry_stub_restorer, 0};
  SYS4(__NR_rt_sigaction, SIGCHLD, &ignore, 0, 8);
  u64 unblock = 0;
  SYS4(__NR_rt_sigprocmask, 2 /* SIG_SETMASK */, &unblock, 0, 8);
  if (SYS2(__NR_prctl, PR_SET_NO_NEW_PRIVS, 1) != 0) die(10);
  drop_capabilities();
  install_filter(token);
  /* The filter (and so the fork token) is in the kernel now: none of it stays where the guest
   * can read it. */
  token = 0;
  for (unsigned i = 0; i < sizeof g_filter / sizeof g_filter[0]; ++i) {
    ((volatile struct sock_filter*)g_filter)[i].k = 0;
  }
  start_watchdog();

  /* A syscall from here traps like the guest's: the handler reports READY and, at the first
   * RESUME, loads the guest's entry registers into the frame. Callee-saved registers are
   * cleared first (the token may be in one; the handler's prologue saves them on its stack). */
  __asm__ volatile(
      "xor %%ebx, %%ebx\n xor %%ebp, %%ebp\n xor %%r12d, %%r12d\n xor %%r13d, %%r13d\n"
      "xor %%r14d, %%r14d\n xor %%r15d, %%r15d\n mov $39, %%eax\n syscall" ::
          : "rax", "rbx", "rbp", "r12", "r13", "r14", "r15", "rcx", "r11", "memory");
  die(11); /* never reached: RESUME sets RIP to the guest's entry */
}

__asm__(
    ".text\n"
    ".globl _start\n"
    "_start:\n"
    "  and $-16, %rsp\n"
    "  call flurry_stub_main\n"
    "  ud2\n");
