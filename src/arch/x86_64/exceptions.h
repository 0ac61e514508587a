// x86 exceptions as a user program meets them: names, the Linux signal each one raises, and
// the one-line diagnostic flurry prints when a guest dies of one (the same on every backend).
#pragma once

#include <cstdint>
#include <string>

namespace flurry::x86 {

inline constexpr int kExceptionCount = 32;

bool VectorHasErrorCode(int vector);
const char* VectorName(int vector);
// The Linux signal a process gets for this exception (SIGSEGV, SIGILL, SIGFPE, ...).
int VectorSignal(int vector);

// What is known about a guest's fault.
struct FaultReport {
  int vector = 0;
  uint64_t rip = 0;
  uint64_t rsp = 0;
  uint64_t address = 0;  // page faults: the faulting address (CR2)
  uint64_t error_code = 0;
  bool has_error_code = false;
};

// The si_code Linux gives the signal of this fault (SEGV_MAPERR/SEGV_ACCERR for page faults,
// FPE_INTDIV, ILL_ILLOPN, SI_KERNEL for general protection, ...), and the si_addr: the faulting
// address for page faults, the instruction for the others (0 where Linux reports none).
int FaultSignalCode(const FaultReport& fault);
uint64_t FaultSignalAddress(const FaultReport& fault);

// "read not present", "write protection violation (in supervisor mode)", ...
std::string PageFaultCause(uint64_t error);
// "guest fault: vector 14 page fault (#PF) at rip 0x401000, address 0x0 (read not present,
// error 0x4), rsp 0x7ffe00 -> SIGSEGV"
std::string DescribeFault(const FaultReport& fault);

}  // namespace flurry::x86
