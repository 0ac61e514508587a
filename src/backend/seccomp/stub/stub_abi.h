/* The page shared between the VMM and a seccomp-backend stub process: the VMM's half of the
 * stub's ABI (docs/design.md, "The seccomp backend"). C and C++.
 *
 * A stub is a tiny freestanding program (stub.c) that holds the guest's memory at the guest's
 * addresses and runs the guest's code. Whenever the guest needs the VMM — a syscall (seccomp
 * SECCOMP_RET_TRAP -> SIGSYS), a fault (SIGSEGV, SIGFPE, ...), or an interruption the VMM asked
 * for (kFlurryStubKickSignal) — the stub's signal handler copies the guest's registers here,
 * hands the page to the VMM and waits. The VMM answers with commands; kFlurryStubResume loads
 * the (possibly changed) registers back into the signal frame and returns to the guest.
 *
 * `turn` is the futex word that says whose move it is. Everything else is written only by the
 * side whose turn it is. The guest can write this page too (it shares the stub's address
 * space), so the VMM treats every field as untrusted input. */
#ifndef FLURRY_BACKEND_SECCOMP_STUB_STUB_ABI_H_
#define FLURRY_BACKEND_SECCOMP_STUB_STUB_ABI_H_

#include <stdint.h>

/* Where the stub's code and the shared page live: far above any guest address (guest RAM is at
 * most 64 GiB, identity-mapped from 0). */
#define FLURRY_STUB_TEXT_ADDR 0x7e0000000000ULL
#define FLURRY_STUB_SHARED_ADDR 0x7d0000000000ULL
/* The shared area: one 64 KiB page (a hand-off block) per lane, lane k at
 * FLURRY_STUB_SHARED_ADDR + k * FLURRY_STUB_LANE_SIZE. The setup block and `vmm_alive` are read
 * from page 0 only. A lane is one stub thread running guest code (docs/protocols/stub.md). */
#define FLURRY_STUB_MAX_LANES 16
#define FLURRY_STUB_LANE_SIZE 0x10000ULL                                        /* 64 KiB */
#define FLURRY_STUB_SHARED_SIZE (FLURRY_STUB_MAX_LANES * FLURRY_STUB_LANE_SIZE) /* 1 MiB */
/* The shared page's memfd as the stub finds it at exec. */
#define FLURRY_STUB_SHARED_FD 3

#define FLURRY_STUB_MAGIC 0x4255545359524c46ULL /* "FLRYSTUB" */
#define FLURRY_STUB_VERSION 5 /* 4: lanes, the doorbell, CMD_ADD_LANE; 5: CMD_END_LANE */

/* turn */
#define FLURRY_STUB_TURN_GUEST 0 /* the guest is running (or the stub is starting) */
#define FLURRY_STUB_TURN_VMM 1   /* the stub stopped; the VMM reads `event` and answers */
#define FLURRY_STUB_TURN_STUB 2  /* the VMM posted `command`; the stub carries it out */

/* event (stub -> VMM) */
#define FLURRY_STUB_EVENT_READY 1    /* set up; waiting for the first kFlurryStubResume */
#define FLURRY_STUB_EVENT_SYSCALL 2  /* the guest made syscall `syscall_nr` */
#define FLURRY_STUB_EVENT_FAULT 3    /* the guest faulted: signo, si_code, fault_addr, ... */
#define FLURRY_STUB_EVENT_KICKED 4   /* the VMM interrupted the guest */
#define FLURRY_STUB_EVENT_DONE 5     /* the last command finished; `result` holds its result */
#define FLURRY_STUB_EVENT_FORKED 6   /* (in a new stub) forked, now served through this page */
#define FLURRY_STUB_EVENT_BAD_ARCH 7 /* a syscall through a non-x86-64 entry (int 0x80) */

/* command (VMM -> stub) */
#define FLURRY_STUB_CMD_RESUME 1   /* load `regs` (flags below) and return to the guest */
#define FLURRY_STUB_CMD_FORK 2     /* fork(); result = child pid (in the stub's PID namespace) */
#define FLURRY_STUB_CMD_MADVISE 3  /* madvise(args[0], args[1], args[2]); result = -errno or 0 */
#define FLURRY_STUB_CMD_SAVE_FPU 4 /* copy the guest's XSAVE image to `xsave` */
#define FLURRY_STUB_CMD_EXIT 5     /* exit_group(0) */
#define FLURRY_STUB_CMD_CLOSE_FDS                                 \
  6 /* close_range(0, ~0, 0): the stub keeps no fd (after the VMM \
     * took the userfaultfd) */
/* mprotect(args[0], args[1], args[2]) of guest RAM; result = -errno or 0. The filter lets only
 * addresses in [FLOOR, 64 GiB), lengths below 64 GiB and PROT_READ/WRITE/EXEC through. */
#define FLURRY_STUB_CMD_MPROTECT 7
#define FLURRY_STUB_MPROTECT_LIMIT_HI 16u    /* 64 GiB >> 32 */
#define FLURRY_STUB_MPROTECT_FLOOR 0x200000u /* guest user memory starts at 2 MiB */
/* Sent to a stopped lane: starts lane args[0] (1..MAX_LANES-1, not started yet) as a new stub
 * thread; args[1] = the fork token. result = the new thread's tid, or -errno. The new lane
 * announces itself with EVENT_READY on its own page. */
#define FLURRY_STUB_CMD_ADD_LANE 8
/* Sent to a stopped lane other than lane 0 (the stub's main thread, which never ends): its thread
 * ends (the exit syscall); nothing is answered. The VMM waits until /proc/PID/status shows the
 * thread gone. The lane's number is free again; its page keeps whatever was in it. */
#define FLURRY_STUB_CMD_END_LANE 9
/* The clone() flags of a new lane's thread (the only ones the filter allows besides SIGCHLD):
 * CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM. */
#define FLURRY_STUB_LANE_CLONE_FLAGS 0x50f00u

/* setup_flags */
#define FLURRY_STUB_SETUP_USERFAULTFD                       \
  1u /* create a userfaultfd (user-mode faults only) of the \
      * stub's memory before the filter; its fd -> uffd_fd */
/* CMD_FORK: args[0] = the fork token, args[1] = 1 if the child dies with this stub */

/* resume_flags */
#define FLURRY_STUB_LOAD_REGS 1u /* copy `regs` into the signal frame */
#define FLURRY_STUB_LOAD_FS 2u   /* arch_prctl(ARCH_SET_FS, regs.fs_base) */
#define FLURRY_STUB_LOAD_GS 4u   /* arch_prctl(ARCH_SET_GS, regs.gs_base) */
#define FLURRY_STUB_LOAD_FPU 8u  /* copy `xsave` (xsave_size bytes) into the frame's FPU state */

/* The stub's signal for "stop the guest and hand over" (SIGURG's number is not used by the
 * stub for anything else). */
#define FLURRY_STUB_KICK_SIGNAL 23 /* SIGURG */

#define FLURRY_STUB_XSAVE_MAX (32 * 1024)

struct flurry_stub_regs {
  uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp;
  uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
  uint64_t rip, rflags, fs_base, gs_base;
};

struct flurry_stub_shared {
  /* Written by the VMM before the stub starts; read-only afterwards. */
  uint64_t magic;
  uint32_t version;
  uint32_t setup_flags; /* FLURRY_STUB_SETUP_* */
  uint64_t ram_size;    /* guest RAM: [user_base, ram_size) is mapped read/write/execute */
  uint64_t user_base;   /* first guest user address (2 MiB) */
  uint64_t huge_start;  /* [huge_start, huge_end): advised for transparent huge pages */
  uint64_t huge_end;
  uint64_t vvar_addr; /* the guest vDSO's clock page, read-only */
  uint64_t vdso_addr; /* the guest vDSO, read + execute */
  uint64_t vdso_size;
  uint64_t guard_start; /* [guard_start, guard_end): left unmapped (below the guest stack) */
  uint64_t guard_end;
  uint64_t fork_token; /* the stub's fork site refuses (kills) a fork without this value */

  /* The hand-off. */
  uint32_t turn; /* futex word: FLURRY_STUB_TURN_* */
  uint32_t event;
  uint32_t command;
  uint32_t resume_flags;
  uint32_t vmm_waiting;  /* the VMM sleeps on `turn` (the stub must FUTEX_WAKE it) */
  uint32_t stub_waiting; /* the stub sleeps on `turn` (the VMM must FUTEX_WAKE it) */
  /* A robust futex word of the VMM process: it holds the TID of the VMM's sentinel thread,
   * whose robust list (in the VMM's private memory) points here. The kernel sets
   * FUTEX_OWNER_DIED in it when the VMM process dies, however it dies, and the stub then ends
   * itself (src/backend/seccomp/vmm_alive.h). */
  uint32_t vmm_alive;
  uint32_t vmm_alive_pad;
  uint64_t syscall_nr;
  int32_t signo; /* EVENT_FAULT: the host signal */
  int32_t si_code;
  uint64_t fault_addr;
  uint64_t trapno; /* x86 exception vector */
  uint64_t error_code;
  struct flurry_stub_regs regs;
  int64_t result;
  uint64_t args[4];
  uint32_t xsave_size; /* bytes valid in `xsave` */
  uint32_t xsave_pad;
  int64_t uffd_fd; /* SETUP_USERFAULTFD: the stub's fd number of it (-1: none) */
  /* Page 0 only: waiting for any lane. A stub thread that hands off (any lane) increments
   * `doorbell` after it stored its lane's turn = VMM, and FUTEX_WAKEs it if `vmm_waiting_any`
   * is set (the VMM sleeps on the doorbell). */
  uint32_t doorbell;
  uint32_t vmm_waiting_any;
  uint64_t reserved[6];
  uint8_t xsave[FLURRY_STUB_XSAVE_MAX] __attribute__((aligned(64)));
};

#ifdef __cplusplus
static_assert(sizeof(flurry_stub_regs) == 20 * 8, "stub regs layout");
static_assert(sizeof(flurry_stub_shared) <= FLURRY_STUB_LANE_SIZE, "stub page size");
static_assert(__builtin_offsetof(flurry_stub_shared, turn) == 96,
              "layout (docs/protocols/stub.md)");
static_assert(__builtin_offsetof(flurry_stub_shared, event) == 100, "layout");
static_assert(__builtin_offsetof(flurry_stub_shared, vmm_alive) == 120, "layout");
static_assert(__builtin_offsetof(flurry_stub_shared, syscall_nr) == 128, "layout");
static_assert(__builtin_offsetof(flurry_stub_shared, regs) == 168, "layout");
static_assert(__builtin_offsetof(flurry_stub_shared, args) == 336, "layout");
static_assert(__builtin_offsetof(flurry_stub_shared, uffd_fd) == 376, "layout");
static_assert(__builtin_offsetof(flurry_stub_shared, doorbell) == 384, "layout");
static_assert(__builtin_offsetof(flurry_stub_shared, vmm_waiting_any) == 388, "layout");
static_assert(__builtin_offsetof(flurry_stub_shared, xsave) == 448, "layout");
static_assert(FLURRY_STUB_MAX_LANES <= 32, "lane sets are 32-bit masks");
#else
_Static_assert(sizeof(struct flurry_stub_shared) <= FLURRY_STUB_LANE_SIZE, "stub page size");
_Static_assert(__builtin_offsetof(struct flurry_stub_shared, doorbell) == 384, "layout");
_Static_assert(__builtin_offsetof(struct flurry_stub_shared, vmm_waiting_any) == 388, "layout");
#endif

#endif /* FLURRY_BACKEND_SECCOMP_STUB_STUB_ABI_H_ */
