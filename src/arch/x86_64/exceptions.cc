#include "arch/x86_64/exceptions.h"

#include <fmt/format.h>

#include <csignal>
#include <cstring>

namespace flurry::x86 {

bool VectorHasErrorCode(int vector) {
  switch (vector) {
    case 8:
    case 10:
    case 11:
    case 12:
    case 13:
    case 14:
    case 17:
    case 21:
    case 29:
    case 30:
      return true;
    default:
      return false;
  }
}

const char* VectorName(int vector) {
  static const char* const kNames[kExceptionCount] = {"divide error (#DE)",
                                                      "debug (#DB)",
                                                      "NMI",
                                                      "breakpoint (#BP)",
                                                      "overflow (#OF)",
                                                      "bound range (#BR)",
                                                      "invalid opcode (#UD)",
                                                      "device not available (#NM)",
                                                      "double fault (#DF)",
                                                      "coprocessor segment overrun",
                                                      "invalid TSS (#TS)",
                                                      "segment not present (#NP)",
                                                      "stack fault (#SS)",
                                                      "general protection (#GP)",
                                                      "page fault (#PF)",
                                                      "reserved 15",
                                                      "x87 floating point (#MF)",
                                                      "alignment check (#AC)",
                                                      "machine check (#MC)",
                                                      "SIMD floating point (#XM)",
                                                      "virtualization (#VE)",
                                                      "control protection (#CP)",
                                                      "reserved 22",
                                                      "reserved 23",
                                                      "reserved 24",
                                                      "reserved 25",
                                                      "reserved 26",
                                                      "reserved 27",
                                                      "hypervisor injection (#HV)",
                                                      "VMM communication (#VC)",
                                                      "security (#SX)",
                                                      "reserved 31"};
  if (vector < 0 || vector >= kExceptionCount) return "unknown vector";
  return kNames[vector];
}

int VectorSignal(int vector) {
  switch (vector) {
    case 0:
    case 16:
    case 19:
      return SIGFPE;
    case 1:
    case 3:
      return SIGTRAP;
    case 6:
      return SIGILL;
    case 7:
    case 17:
      return SIGBUS;
    case 12:
    case 13:
    case 14:
      return SIGSEGV;
    default:
      return SIGSEGV;
  }
}

int FaultSignalCode(const FaultReport& fault) {
  constexpr int kSiKernel = 0x80;
  switch (fault.vector) {
    case 0:
      return FPE_INTDIV;
    case 1:
      return TRAP_TRACE;
    case 3:
      return SI_KERNEL;  // int3: Linux reports SI_KERNEL
    case 6:
      return ILL_ILLOPN;
    case 14:
      return (fault.error_code & 1) ? SEGV_ACCERR : SEGV_MAPERR;
    case 16:
    case 19:
      return FPE_FLTINV;
    case 17:
      return BUS_ADRALN;
    default:
      return kSiKernel;  // #GP, #SS, #NP, ...
  }
}

uint64_t FaultSignalAddress(const FaultReport& fault) {
  switch (fault.vector) {
    case 14:
      return fault.address;
    case 0:
    case 6:
    case 16:
    case 19:
      return fault.rip;
    default:
      return 0;
  }
}

std::string PageFaultCause(uint64_t error) {
  return fmt::format("{} {}{}",
                     (error & 0x10) ? "instruction fetch"
                     : (error & 2)  ? "write"
                                    : "read",
                     (error & 1) ? "protection violation" : "not present",
                     (error & 4) ? "" : " (in supervisor mode)");
}

std::string DescribeFault(const FaultReport& fault) {
  std::string detail = fmt::format("{} at rip {:#x}", VectorName(fault.vector), fault.rip);
  if (fault.vector == 14) {
    detail += fmt::format(", address {:#x} ({}, error {:#x})", fault.address,
                          PageFaultCause(fault.error_code), fault.error_code);
  } else if (fault.has_error_code) {
    detail += fmt::format(", error code {:#x}", fault.error_code);
  }
  detail += fmt::format(", rsp {:#x}", fault.rsp);
  const int signal = VectorSignal(fault.vector);
  const char* name = sigabbrev_np(signal);
  return fmt::format("guest fault: vector {} {} -> {}", fault.vector, detail,
                     name != nullptr ? fmt::format("SIG{}", name) : "signal");
}

}  // namespace flurry::x86
