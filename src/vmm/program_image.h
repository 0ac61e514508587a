// The program a VM runs: reading its file, and starting it in guest memory — the ELF loaded,
// the initial stack built, the memory map with the segments' protections. Used when a VM is
// made (vm_create.cc) and by execve (vm_exec.cc).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/mapping.h"
#include "guest/elf.h"
#include "guest/elf_loader.h"
#include "guest/memory_map.h"
#include "memory/guest_memory.h"

namespace flurry {

// The program file's bytes: mapped read-only (a private snapshot of the page cache; reading
// it into fresh memory cost ~3 ms of page faults for a 750 KiB program on a nested host).
struct ProgramFile {
  Mapping mapping;
  std::span<const uint8_t> bytes;
};

// Maps the whole file `fd` (named `name` in errors), refusing files larger than `limit`
// (EFBIG) and anything but a regular file (EACCES).
Result<ProgramFile> ReadProgram(int fd, const std::string& name, uint64_t limit);

// The guest's memory layout for a program in `ram` bytes (see guest/memory_map.h): the stack
// at the top, a guard below it, mmap below the guard.
struct ProgramLayout {
  uint64_t ram = 0;
  uint64_t stack_bottom = 0;
  uint64_t mmap_top = 0;  // = the guard's start
  static ProgramLayout For(uint64_t ram);
};

struct ProgramArgs {
  std::vector<std::string> argv;
  std::vector<std::string> envp;
  std::string execfn;  // AT_EXECFN
};

struct StartedProgram {
  LoadedImage image;
  MemoryMap memory_map;  // protections set, changes taken (the caller applies them all)
  uint64_t rsp = 0;
};

// Loads `elf` (parsed from `file`) into `memory`, whose user part must be zero, and builds its
// initial stack; the vDSO is at `vdso`.
Result<StartedProgram> StartProgram(const ElfImage& elf, std::span<const uint8_t> file,
                                    GuestMemory& memory, const ProgramLayout& layout,
                                    const ProgramArgs& args, uint64_t vdso);

}  // namespace flurry
