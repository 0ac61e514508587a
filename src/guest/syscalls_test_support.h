// A GuestMemory + GuestState + SyscallTable bundle for syscall unit tests.
#pragma once

#include <sys/syscall.h>

#include "arch/x86_64/layout.h"
#include "guest/syscall.h"

namespace flurry::testing {

struct SyscallHarness {
  static constexpr uint64_t kRam = 64ULL << 20;
  GuestMemory memory = GuestMemory::Create(kRam).value();
  GuestState state;
  SyscallTable table = SyscallTable::Default();
  ProcessTable processes;  // none unless a test makes one
  // Scratch user memory for arguments, well away from the image and mmap area.
  static constexpr uint64_t kScratch = 3ULL << 20;

  SyscallHarness() {
    // image [4 MiB, 5 MiB); mmap below 54 MiB; guard; stack [56 MiB, 64 MiB)
    state.memory_map = MemoryMap(4 << 20, 5 << 20, 54 << 20, 56 << 20, kRam);
    state.identity.pid = 42;
    state.identity.tid = 42;
  }

  int64_t Call(uint64_t nr, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0,
               uint64_t a4 = 0, uint64_t a5 = 0) {
    SyscallContext context{memory, state};
    state.threads.block.reset();  // as the VMM takes a parked thread's request at every stop
    context.processes = &processes;
    last = table.Dispatch(context, SyscallArgs{nr, {a0, a1, a2, a3, a4, a5}});
    return last.value;
  }
  SyscallResult last;
};

}  // namespace flurry::testing
