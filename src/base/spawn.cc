#include "base/spawn.h"

#include <sched.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>
#include <memory>

extern char** environ;

namespace flurry {

std::vector<char*> ExecArray(const std::vector<std::string>& strings) {
  std::vector<char*> array;
  for (const std::string& s : strings) array.push_back(const_cast<char*>(s.c_str()));
  array.push_back(nullptr);
  return array;
}

Result<pid_t> SpawnWithDefaultSignals(const std::vector<std::string>& args,
                                      const posix_spawn_file_actions_t* actions) {
  if (args.empty()) return FailErrno(EINVAL, "spawning a program: no command line");
  std::vector<char*> argv = ExecArray(args);
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

namespace {

// What the child of SpawnTied needs, prepared by the parent: between clone and exec the child
// shares the parent's memory while the parent's other threads run on, so it makes system
// calls only (no allocation, no locks).
struct TiedPlan {
  char* const* argv;
  char* const* envp;
  const int* fds;
  int fd_count;
  const char* work_dir;  // null: stay
  pid_t parent;
  int exec_errno;  // set by the child when it could not exec
};

// The kernel's struct sigaction (rt_sigaction with an 8-byte mask).
struct KernelSigaction {
  void (*handler)(int);
  unsigned long flags;
  void (*restorer)();
  uint64_t mask;
};

[[noreturn]] void TiedChildFails(TiedPlan* plan, int error) {
  plan->exec_errno = error;
  syscall(SYS_exit_group, 127);
  __builtin_unreachable();
}

// System calls through syscall(2) only: libc's wrappers may be intercepted (sanitizers) or
// touch state the parent's threads share. (syscall(2) sets errno in the TLS of the calling
// thread, which is suspended until the exec; SpawnTied resolves syscall's PLT entry first.)
int RunTiedChild(void* arg) {
  auto* plan = static_cast<TiedPlan*>(arg);
  // Handlers are the parent's code: none may run here, so the dispositions go back to the
  // default before signals are unblocked (the child has its own table; exec would do it too).
  for (int sig = 1; sig < 65; ++sig) {
    if (sig == SIGKILL || sig == SIGSTOP) continue;
    KernelSigaction old{};
    if (syscall(SYS_rt_sigaction, sig, nullptr, &old, sizeof old.mask) != 0) continue;
    if (old.handler == SIG_DFL || old.handler == SIG_IGN) continue;
    KernelSigaction fallback{};
    fallback.handler = SIG_DFL;
    syscall(SYS_rt_sigaction, sig, &fallback, nullptr, sizeof fallback.mask);
  }
  syscall(SYS_setpgid, 0, 0);
  syscall(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
  if (syscall(SYS_getppid) != plan->parent) TiedChildFails(plan, ESRCH);  // it died already
  for (int i = 0; i < plan->fd_count; ++i) {
    if (syscall(SYS_dup2, plan->fds[i], i) < 0) TiedChildFails(plan, errno);
  }
  if (plan->work_dir != nullptr && syscall(SYS_chdir, plan->work_dir) != 0) {
    TiedChildFails(plan, errno);
  }
  const uint64_t none = 0;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, &none, nullptr, sizeof none);
  syscall(SYS_execve, plan->argv[0], plan->argv, plan->envp);
  TiedChildFails(plan, errno);
}

}  // namespace

Result<pid_t> SpawnTied(const TiedSpawn& spec) {
  if (spec.args.empty()) return FailErrno(EINVAL, "spawning a program: no command line");
  for (int fd : spec.fds) {
    if (fd < static_cast<int>(spec.fds.size())) {
      return FailErrno(EINVAL,
                       fmt::format("starting {}: fd {} would be overwritten", spec.args[0], fd));
    }
  }
  std::vector<char*> argv = ExecArray(spec.args);
  std::vector<char*> envp = ExecArray(spec.environment);
  TiedPlan plan{argv.data(),
                envp.data(),
                spec.fds.data(),
                static_cast<int>(spec.fds.size()),
                spec.work_dir.empty() ? nullptr : spec.work_dir.c_str(),
                getpid(),
                0};
  (void)syscall(SYS_getpid);  // bound now, not by the lazy resolver in the child
  constexpr size_t kStackBytes = 64 * 1024;
  auto stack = std::make_unique_for_overwrite<uint8_t[]>(kStackBytes);
  // Every signal blocked across the clone: the child must not run a handler before it has
  // reset the dispositions.
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  const pid_t pid =
      clone(RunTiedChild, stack.get() + kStackBytes, CLONE_VM | CLONE_VFORK | SIGCHLD, &plan);
  const int clone_errno = errno;
  pthread_sigmask(SIG_SETMASK, &old, nullptr);
  if (pid < 0) return FailErrno(clone_errno, fmt::format("starting {}", spec.args[0]));
  // CLONE_VFORK: the child has exec'ed or exited by now.
  if (plan.exec_errno != 0) {
    waitpid(pid, nullptr, 0);
    return FailErrno(plan.exec_errno, fmt::format("starting {}", spec.args[0]));
  }
  return pid;
}

}  // namespace flurry
