// Starting a helper program (a remote clone's stand-in, flurry-remote status) from a VMM: the
// child gets no blocked signals and default dispositions (the VMM blocks and catches signals
// its helpers must not inherit), and the file actions the caller set up.
#pragma once

#include <spawn.h>
#include <sys/types.h>

#include <string>
#include <vector>

#include "base/error.h"

namespace flurry {

// posix_spawn of args[0] with `args` and this process's environment; `actions` may be null.
Result<pid_t> SpawnWithDefaultSignals(const std::vector<std::string>& args,
                                      const posix_spawn_file_actions_t* actions);

}  // namespace flurry
