#include "base/spawn.h"

#include <csignal>

extern char** environ;

namespace flurry {

Result<pid_t> SpawnWithDefaultSignals(const std::vector<std::string>& args,
                                      const posix_spawn_file_actions_t* actions) {
  if (args.empty()) return FailErrno(EINVAL, "spawning a program: no command line");
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes, &none);
  sigset_t defaults;
  sigfillset(&defaults);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  pid_t pid = 0;
  const int err = posix_spawn(&pid, argv[0], actions, &attributes, argv.data(), environ);
  posix_spawnattr_destroy(&attributes);
  if (err != 0) return FailErrno(err, fmt::format("starting {}", args[0]));
  return pid;
}

}  // namespace flurry
