// UserCpuState: the user-visible CPU state of a process-mode guest — what a program running at
// CPL3 can observe — independent of the execution backend that runs it. KVM's sregs, MSRs and
// page tables are constants that backend regenerates; the seccomp backend has none of them.
// Clones, snapshots and VM descriptors carry only this (docs/formats/descriptor.md).
//
// Plain data.
#pragma once

#include <cstdint>
#include <vector>

namespace flurry::x86 {

// General-purpose registers, RIP, RFLAGS and the FS/GS segment bases (arch_prctl).
struct UserRegs {
  uint64_t rax = 0, rbx = 0, rcx = 0, rdx = 0, rsi = 0, rdi = 0, rsp = 0, rbp = 0;
  uint64_t r8 = 0, r9 = 0, r10 = 0, r11 = 0, r12 = 0, r13 = 0, r14 = 0, r15 = 0;
  uint64_t rip = 0;
  uint64_t rflags = 0x202;  // IF and the always-one bit
  uint64_t fs_base = 0;
  uint64_t gs_base = 0;

  bool operator==(const UserRegs&) const = default;

  // Stopped just past a `syscall` instruction: stand on it again, to make syscall `nr` again
  // (how Linux restarts an interrupted syscall).
  void RewindSyscall(uint64_t nr) {
    rip -= 2;  // the length of `syscall`
    rax = nr;
  }
};

struct UserCpuState {
  // The largest XSAVE image accepted (standard, non-compacted format). AMX tiles need ~11 KiB.
  static constexpr uint64_t kMaxXsaveBytes = 16 * 1024;
  // The legacy FXSAVE region plus the XSAVE header: the smallest meaningful image.
  static constexpr uint64_t kMinXsaveBytes = 576;

  UserRegs regs;
  // XCR0 in force when `xsave` was taken: which state components the image may hold.
  uint64_t xcr0 = 0;
  // FPU/SSE/AVX/... state in the standard XSAVE format (legacy region, header with XSTATE_BV and
  // XCOMP_BV = 0, extended components at their CPUID leaf 0xD offsets). Bytes 464..511 of the
  // legacy region (software-reserved) are zero. Empty: the initial FPU state.
  std::vector<uint8_t> xsave;

  bool operator==(const UserCpuState&) const = default;
};

}  // namespace flurry::x86
