// Writes the guest's GDT, TSS, IDT, exception stubs and syscall gate into the system area.
//
// The only code that ever runs at CPL0 in a flurry guest is here, and it is kept to a few
// instructions (CPL0 code is instruction-emulated on the PVM backend):
//  * exception stub for vector v:  out kExceptionPortBase+v, al ; [add rsp, 8] ; iretq
//    — the port write exits to the VMM, which reads the exception frame from the kernel stack.
//  * syscall gate (LSTAR):          mov [kDoorbellAddr], eax ; sysretq
//    — the doorbell write is an MMIO exit; the VMM serves the syscall. On hardware KVM the
//    gate runs at CPL0 and sysretq returns to the caller; on PVM `syscall` does not raise CPL,
//    so the VMM itself resumes the guest at RCX with RFLAGS = R11. See docs/abi.md.
#pragma once

#include <cstdint>

#include "arch/x86_64/exceptions.h"
#include "base/error.h"
#include "memory/guest_memory.h"

namespace flurry::x86 {

void WriteSystemTables(GuestMemory& memory);

// The address just after the gate's doorbell write: where RIP stands at a syscall exit.
uint64_t SyscallGateExitRip();

// The address of an `iretq` at CPL0 (in vector 0's stub, which has no error code to drop):
// the VMM resumes a guest stopped at CPL0 with a whole new register set by pointing RSP at an
// iret frame and RIP here.
uint64_t IretqRip();

// Frame the CPU pushes on the kernel stack when an exception is delivered (error code first;
// vectors without one get no slot — the VMM knows which vectors have one).
struct ExceptionFrame {
  uint64_t error_code;
  uint64_t rip;
  uint64_t cs;
  uint64_t rflags;
  uint64_t rsp;
  uint64_t ss;
};

}  // namespace flurry::x86
