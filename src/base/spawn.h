// Starting programs. From a VMM, a helper (a remote clone's stand-in, flurry-remote status):
// the child gets no blocked signals and default dispositions (the VMM blocks and catches
// signals its helpers must not inherit), and the file actions the caller set up. From the
// daemon, a clone's VMM, tied to the daemon's thread that runs it.
#pragma once

#include <spawn.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "base/error.h"

namespace flurry {

// `strings` as an argv/envp array: pointers into them, then a null pointer. Valid while
// `strings` lives unchanged.
std::vector<char*> ExecArray(const std::vector<std::string>& strings);

// posix_spawn of args[0] with `args` and this process's environment; `actions` may be null.
Result<pid_t> SpawnWithDefaultSignals(const std::vector<std::string>& args,
                                      const posix_spawn_file_actions_t* actions);

// A program started by SpawnTied.
struct TiedSpawn {
  std::vector<std::string> args;         // args[0]: the program's path
  std::vector<std::string> environment;  // "NAME=value", all of it
  // The child's descriptors 0, 1, 2, ... in order (dup2'ed there); none of these may itself be
  // below fds.size() (they are this process's, close-on-exec).
  std::vector<int> fds;
  std::string work_dir;  // empty: this process's
};

// Starts `spec` in a process group of its own that dies with the calling thread
// (PR_SET_PDEATHSIG SIGKILL), with no blocked signals. Like posix_spawn it does not copy this
// process (clone with CLONE_VM | CLONE_VFORK: the caller waits until the exec), which fork()
// from a large daemon with many threads would: its page tables, then a copy-on-write fault on
// every page it writes afterwards. A program that cannot be executed is an error here.
Result<pid_t> SpawnTied(const TiedSpawn& spec);

}  // namespace flurry
