// Guest faults: turning an exception exit into the one-line diagnostic and the signal a native
// process would have died of.
#include <linux/kvm.h>

#include <cstring>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/system_tables.h"
#include "vmm/vm.h"

namespace flurry {
namespace {

std::string PageFaultCause(uint64_t error) {
  return fmt::format("{} {}{}",
                     (error & 0x10) ? "instruction fetch"
                     : (error & 2)  ? "write"
                                    : "read",
                     (error & 1) ? "protection violation" : "not present",
                     (error & 4) ? "" : " (in supervisor mode)");
}

}  // namespace

Result<GuestExit> Vm::HandleException(int vector) {
  // The stub runs on the kernel stack with the CPU-pushed frame at RSP.
  const kvm_regs& regs = vcpu_.regs();
  x86::ExceptionFrame frame{};
  const bool has_error = x86::VectorHasErrorCode(vector);
  const uint64_t frame_size = has_error ? sizeof frame : sizeof frame - 8;
  if (regs.rsp < x86::kKernelStackBottom || regs.rsp + frame_size > x86::kFaultStackTop) {
    return GuestExit{GuestExit::Kind::kSignaled, 0, x86::VectorSignal(vector),
                     DescribeFailure("exception with a corrupt kernel stack")};
  }
  const uint8_t* top = memory_.HostPointer(regs.rsp, frame_size);
  std::memcpy(
      has_error ? reinterpret_cast<uint8_t*>(&frame) : reinterpret_cast<uint8_t*>(&frame) + 8, top,
      frame_size);
  std::string detail = fmt::format("{} at rip {:#x}", x86::VectorName(vector), frame.rip);
  if (vector == 14) {
    kvm_sregs sregs = FLURRY_TRY(vcpu_.GetSregs());
    detail += fmt::format(", address {:#x} ({}, error {:#x})", sregs.cr2,
                          PageFaultCause(frame.error_code), frame.error_code);
  } else if (has_error) {
    detail += fmt::format(", error code {:#x}", frame.error_code);
  }
  detail += fmt::format(", rsp {:#x}", frame.rsp);
  const int signal = x86::VectorSignal(vector);
  return GuestExit{
      GuestExit::Kind::kSignaled, 0, signal,
      fmt::format("guest fault: vector {} {} -> {}", vector, detail,
                  sigabbrev_np(signal) ? fmt::format("SIG{}", sigabbrev_np(signal)) : "signal")};
}

std::string Vm::DescribeFailure(const char* what) {
  const kvm_regs& regs = vcpu_.regs();
  return fmt::format("guest stopped: {} at rip {:#x}, rsp {:#x}", what, regs.rip, regs.rsp);
}

}  // namespace flurry
