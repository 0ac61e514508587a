// What execve/execveat ask for, read from the guest and checked before the calling program is
// given up: the arguments, the environment and the program file, open. The VMM then replaces
// the program (src/vmm/vm_exec.cc). Errors carry the errno the guest sees; nothing here
// changes the guest.
#pragma once

#include <string>
#include <vector>

#include "base/unique_fd.h"
#include "guest/syscall.h"

namespace flurry {

struct ExecRequest {
  std::string path;      // as the guest named it (AT_EXECFN)
  std::string exe_path;  // absolute guest path (readlink /proc/self/exe)
  std::vector<std::string> argv;
  std::vector<std::string> envp;
  UniqueFd file;  // the program, open for reading
};

// Linux's limits: one string at most MAX_ARG_STRLEN, all of them (with their pointers) at most
// a quarter of the 8 MiB stack limit.
inline constexpr uint64_t kMaxArgString = 32 * 4096;
inline constexpr uint64_t kMaxArgTotal = 2 << 20;

// Reads a NULL-terminated array of guest string pointers (argv, envp; 0 is an empty array).
// `total` counts the bytes taken so far (E2BIG past kMaxArgTotal).
Result<std::vector<std::string>> ReadStringArray(const GuestMemory& memory, uint64_t array,
                                                 uint64_t* total);

// execve(path, argv, envp) or execveat(dirfd, path, argv, envp, flags). "/proc/self/exe" is
// the running program: `self_exe` (an fd of its file; -1: none, ENOENT).
Result<ExecRequest> ReadExecRequest(SyscallContext& context, const SyscallArgs& args, int self_exe);

}  // namespace flurry
