// The initial process stack Linux hands a new x86-64 program (System V ABI, "Process
// Initialization"), built by the VMM.
//
// Layout, from the initial RSP upwards:
//   argc
//   argv[0..argc-1], NULL
//   envp[0..envc-1], NULL
//   auxv (key, value) pairs, ending with AT_NULL
//   padding (RSP is 16-byte aligned)
//   16 AT_RANDOM bytes, then the AT_PLATFORM string "x86_64"
//   padding to 16 bytes
//   argv strings, envp strings, the AT_EXECFN string
//   8 zero bytes
// ending at stack_top. This matches what Linux's execve builds, minus its random offsets.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "memory/guest_memory.h"

namespace flurry {

// Everything the initial stack records about the new process.
struct StackInputs {
  std::vector<std::string> argv;
  std::vector<std::string> envp;
  std::string execfn;                // AT_EXECFN: the path the program was started as
  std::array<uint8_t, 16> random{};  // AT_RANDOM bytes (seed the C library's stack canary)
  // From the loaded ELF (LoadedImage).
  uint64_t phdr = 0;   // AT_PHDR
  uint64_t phent = 0;  // AT_PHENT
  uint64_t phnum = 0;  // AT_PHNUM
  uint64_t entry = 0;  // AT_ENTRY
  // From the CPU the guest sees.
  uint64_t hwcap = 0;        // AT_HWCAP (CPUID.1:EDX on x86)
  uint64_t hwcap2 = 0;       // AT_HWCAP2
  uint64_t minsigstksz = 0;  // AT_MINSIGSTKSZ: signal frame size for this CPU's XSAVE state
  uint64_t vdso_base = 0;    // AT_SYSINFO_EHDR; omitted when 0
};

// The stack contents: `bytes` belong at guest addresses [bottom, stack_top); rsp points at argc.
struct InitialStack {
  std::vector<uint8_t> bytes;
  uint64_t rsp = 0;
  uint64_t bottom = 0;
};

// Builds the stack that ends at `stack_top` (16-byte aligned). Fails when it would take more
// than `max_size` bytes.
Result<InitialStack> BuildInitialStack(const StackInputs& inputs, uint64_t stack_top,
                                       uint64_t max_size);

// Writes `stack` into guest memory; returns the initial RSP.
Result<uint64_t> PlaceInitialStack(const InitialStack& stack, GuestMemory& memory);

}  // namespace flurry
