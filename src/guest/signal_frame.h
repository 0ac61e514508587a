// Signal frames: what Linux x86-64 pushes on a guest's stack to run a signal handler
// (struct rt_sigframe: return address, ucontext with the interrupted registers and mask,
// siginfo, then the XSAVE image), and what rt_sigreturn reads back. The layouts are the
// kernel's ABI (arch/x86/include/uapi/asm/sigcontext.h, ucontext.h); docs/design.md ("Signals").
//
// Pure functions over guest memory and a CPU state: the VMM calls them on the vCPU thread.
#pragma once

#include <cstdint>

#include "arch/x86_64/user_cpu_state.h"
#include "base/error.h"
#include "guest/guest_state.h"
#include "guest/signal_state.h"
#include "memory/guest_memory.h"

namespace flurry {

// sa_flags bit: sa_restorer holds the handler's return address (the kernel's SA_RESTORER,
// which glibc's <signal.h> does not define).
inline constexpr uint64_t kSaRestorer = 0x04000000;

// siginfo_t (128 bytes). Only the fields flurry fills are named.
struct GuestSiginfo {
  int32_t signo = 0;
  int32_t error = 0;
  int32_t code = 0;
  int32_t pad = 0;
  // kill/tgkill: pid (low 32 bits) and uid (high 32 bits); faults: the address (si_addr);
  // SI_TIMER: si_timerid (low) and si_overrun (high), si_value in rest[0].
  uint64_t word0 = 0;
  uint64_t rest[13] = {};
};
static_assert(sizeof(GuestSiginfo) == 128);

// struct sigcontext (64-bit), the ucontext's uc_mcontext.
struct GuestSigcontext {
  uint64_t r8, r9, r10, r11, r12, r13, r14, r15;
  uint64_t rdi, rsi, rbp, rbx, rdx, rax, rcx, rsp;
  uint64_t rip, eflags;
  uint16_t cs, gs, fs, ss;
  uint64_t err, trapno, oldmask, cr2;
  uint64_t fpstate;  // guest address of the XSAVE image (0: none, the initial FPU state)
  uint64_t reserved[8];
};
static_assert(sizeof(GuestSigcontext) == 256);

struct GuestUcontext {
  uint64_t flags;
  uint64_t link;
  GuestStack stack;
  GuestSigcontext mcontext;
  uint64_t sigmask;
};
static_assert(sizeof(GuestUcontext) == 304);

struct GuestRtSigframe {
  uint64_t pretcode;  // the handler's return address: sa_restorer (which calls rt_sigreturn)
  GuestUcontext uc;
  GuestSiginfo info;
};
static_assert(sizeof(GuestRtSigframe) == 440);

// What the faulting instruction told the handler (sigcontext trapno/err/cr2); zero otherwise.
struct FaultContext {
  uint64_t trapno = 0;
  uint64_t error_code = 0;
  uint64_t cr2 = 0;
};

// Pushes the frame that runs `action`'s handler for `info.signo` and points `cpu` at it:
// RIP = handler, RSP = the frame, RDI/RSI/RDX = signal, &siginfo, &ucontext, the FPU in its
// initial state. Applies the action's mask, SA_NODEFER, SA_RESETHAND and SA_ONSTACK to
// `signals`. Fails (the guest must then die of SIGSEGV, as Linux forces) when the frame
// cannot be written or the action has no SA_RESTORER.
Result<void> PushSignalFrame(GuestMemory& memory, SignalState& signals, const GuestSiginfo& info,
                             const FaultContext& fault, x86::UserCpuState& cpu);

// rt_sigreturn: reads the frame a handler returned from (RSP - 8, after its `ret` popped the
// return address) into `cpu` (registers, FPU state; RFLAGS only in the bits a program may
// set) and `signals` (mask, alternate stack). A damaged frame fails; `cpu` is then unchanged.
Result<void> PopSignalFrame(GuestMemory& memory, SignalState& signals, x86::UserCpuState& cpu);

// The siginfo a handler (or rt_sigtimedwait) is given for `signal` raised as `info` says.
GuestSiginfo SiginfoOf(int signal, const PendingSignalInfo& info);

// Whether `sp` is on the alternate stack `stack` (an enabled one).
bool OnAltstack(const GuestStack& stack, uint64_t sp);

// sigaltstack's flag bits beside the mode (SS_AUTODISARM), and the smallest stack it takes
// (the kernel's MINSIGSTKSZ; glibc's macro is a sysconf under _GNU_SOURCE).
inline constexpr int32_t kSsAutodisarm = 1 << 31;
inline constexpr uint64_t kMinSigstksz = 2048;

// The alternate stack as sigaltstack(2) reports it with the guest at `sp`.
GuestStack AltstackAsSeen(const SignalState& signals, uint64_t sp);
// Sets the alternate stack as sigaltstack(2) does (also rt_sigreturn's restore): 0, or the
// errno (EPERM while running on it, EINVAL, ENOMEM).
int SetAltstack(SignalState& signals, const GuestStack& stack, uint64_t sp);

}  // namespace flurry
