// The process syscalls' decisions: fork's request to the VMM, wait4/waitid on the process
// table, kill between processes, execve's argument limits. (The VMM's part — forking itself,
// loading a program — is tested end to end in tests/integration/processes_test.cc.)
#include <gtest/gtest.h>
#include <linux/sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

#include "guest/exec_request.h"
#include "guest/syscalls_test_support.h"

namespace flurry {
namespace {

using testing::SyscallHarness;
constexpr uint64_t kBuf = SyscallHarness::kScratch;

// A child of the harness's process (pid 42) that has already ended with `wait_status`.
int32_t EndedChild(SyscallHarness& h, int wait_status) {
  const int32_t pid = h.processes.AllocateId();
  const int slot = h.processes.Reserve(pid, SIGCHLD).value();
  const pid_t host = fork();
  if (host == 0) {
    h.processes.BecomeChild(slot);
    h.processes.Exit(wait_status);
    _exit(0);
  }
  h.processes.Started(slot, true, UniqueFd());
  int status = 0;
  waitpid(host, &status, 0);
  return pid;
}

TEST(SysFork, AsksTheVmmForAProcessWithTheCloneFlags) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_fork), -ENOSYS);  // no process table: the VM cannot fork
  h.processes = ProcessTable::Create(42, 42).value();
  h.Call(SYS_clone, CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID | SIGCHLD, 0, 0, kBuf);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kFork);
  ASSERT_TRUE(h.state.threads.fork.has_value());
  EXPECT_EQ(h.state.threads.fork->exit_signal, SIGCHLD);
  EXPECT_TRUE(h.state.threads.fork->child_settid);
  EXPECT_TRUE(h.state.threads.fork->child_cleartid);
  EXPECT_EQ(h.state.threads.fork->child_tid, kBuf);
  h.state.threads.fork.reset();
  h.Call(SYS_vfork);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kFork);
  // Sharing an fd table or memory (without vfork) between processes is not offered.
  EXPECT_EQ(h.Call(SYS_clone, CLONE_FILES | SIGCHLD), -EINVAL);
  EXPECT_EQ(h.Call(SYS_clone, CLONE_VM | SIGCHLD), -EINVAL);
  EXPECT_EQ(h.Call(SYS_clone, 65), -EINVAL);  // no signal 65
}

// A VM made from a descriptor (a clone, a restored snapshot) already has threads: new ids come
// after them, never one of them again.
TEST(SysFork, ThreadIdsComeAfterTheVmsOwn) {
  SyscallHarness h;
  h.state.threads.last_tid = 50;
  GuestThread other;
  other.tid = 51;  // a thread restored with an id past last_tid must not be handed out either
  h.state.threads.others.push_back(other);
  h.processes = ProcessTable::Create(42, h.state.threads.last_tid).value();
  constexpr uint64_t kThread = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD;
  EXPECT_EQ(h.Call(SYS_clone, kThread, 0x2000000), 52);
}

TEST(SysWait4, EndedChildIsReapedWithItsStatus) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_wait4, -1, 0, 0, 0), -ECHILD);
  h.processes = ProcessTable::Create(42, 42).value();
  EXPECT_EQ(h.Call(SYS_wait4, -1, 0, 0, 0), -ECHILD);
  EXPECT_EQ(h.Call(SYS_wait4, -1, 0, WEXITED, 0), -EINVAL);  // waitid's, not wait4's
  const int32_t child = EndedChild(h, 9 << 8);
  EXPECT_EQ(h.Call(SYS_wait4, child + 1, kBuf, 0, 0), -ECHILD);  // not a child
  EXPECT_EQ(h.Call(SYS_wait4, -1, kBuf, 0, kBuf + 8), child);
  EXPECT_EQ(h.memory.ReadObject<int32_t>(kBuf).value(), 9 << 8);
  EXPECT_EQ(h.Call(SYS_wait4, -1, kBuf, WNOHANG, 0), -ECHILD);
}

TEST(SysWait4, RunningChildParksTheCallerUnlessWnohang) {
  SyscallHarness h;
  h.processes = ProcessTable::Create(42, 42).value();
  const int slot = h.processes.Reserve(h.processes.AllocateId(), SIGCHLD).value();
  h.processes.Started(slot, true, UniqueFd());
  EXPECT_EQ(h.Call(SYS_wait4, -1, kBuf, WNOHANG, 0), 0);
  h.Call(SYS_wait4, -1, kBuf, 0, 0);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kBlock);
  ASSERT_TRUE(h.state.threads.block.has_value());
  EXPECT_EQ(h.state.threads.block->wait, ThreadWait::kFd);
  ASSERT_FALSE(h.state.threads.block->poll_fds.empty());
  EXPECT_EQ(h.state.threads.block->poll_fds[0].fd, h.processes.event_fd());
}

TEST(SysWaitid, FillsSiginfoAndLeavesTheChildWithWnowait) {
  SyscallHarness h;
  h.processes = ProcessTable::Create(42, 42).value();
  const int32_t child = EndedChild(h, SIGTERM);
  EXPECT_EQ(h.Call(SYS_waitid, P_ALL, 0, kBuf, 0, 0), -EINVAL);  // no WEXITED
  EXPECT_EQ(h.Call(SYS_waitid, P_PID, child, kBuf, WEXITED | WNOWAIT, 0), 0);
  siginfo_t info = h.memory.ReadObject<siginfo_t>(kBuf).value();
  EXPECT_EQ(info.si_signo, SIGCHLD);
  EXPECT_EQ(info.si_code, CLD_KILLED);
  EXPECT_EQ(info.si_pid, child);
  EXPECT_EQ(info.si_status, SIGTERM);
  EXPECT_EQ(h.Call(SYS_waitid, P_ALL, 0, kBuf, WEXITED, 0), 0);  // still there: reaped now
  EXPECT_EQ(h.Call(SYS_waitid, P_ALL, 0, kBuf, WEXITED | WNOHANG, 0), -ECHILD);
}

TEST(SysKill, OtherProcessesGetSignalsThroughTheTable) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_kill, 7, SIGTERM), -ESRCH);  // alone in the VM
  EXPECT_EQ(h.Call(SYS_kill, -1, SIGTERM), -ESRCH);
  h.processes = ProcessTable::Create(42, 42).value();
  const int32_t pid = h.processes.AllocateId();
  const int slot = h.processes.Reserve(pid, SIGCHLD).value();
  h.processes.Started(slot, true, UniqueFd());
  EXPECT_EQ(h.Call(SYS_kill, pid, SIGTERM), 0);
  EXPECT_EQ(h.state.signals.pending, 0u);  // not the caller's
  EXPECT_EQ(h.Call(SYS_kill, -1, SIGUSR1), 0);
  EXPECT_EQ(h.state.signals.pending, 0u);      // -1: everyone but the caller
  EXPECT_EQ(h.Call(SYS_kill, 0, SIGUSR2), 0);  // the group: the child and the caller
  EXPECT_EQ(h.state.signals.pending, SignalState::Bit(SIGUSR2));
  EXPECT_EQ(h.Call(SYS_kill, pid + 100, SIGTERM), -ESRCH);
  EXPECT_EQ(h.Call(SYS_tgkill, pid, pid, 0), 0);  // another process's main thread exists
}

TEST(SysGetppid, InitKeepsItsVmsParent) {
  SyscallHarness h;
  h.state.identity.ppid = 7;
  h.processes = ProcessTable::Create(42, 42).value();
  EXPECT_EQ(h.Call(SYS_getppid), 7);
  EXPECT_EQ(h.Call(SYS_getpgid, 0), 42);
  EXPECT_EQ(h.Call(SYS_setsid), -EPERM);  // a group leader
}

TEST(ExecRequest, ArgumentsHaveLinuxsLimits) {
  SyscallHarness h;
  uint64_t total = 0;
  EXPECT_TRUE(ReadStringArray(h.memory, 0, &total).value().empty());  // NULL: no arguments
  // argv = {"ab", NULL}
  ASSERT_TRUE(h.memory.Write(kBuf + 64, "ab", 3).has_value());
  ASSERT_TRUE(h.memory.WriteObject(kBuf, kBuf + 64).has_value());
  ASSERT_TRUE(h.memory.WriteObject(kBuf + 8, uint64_t{0}).has_value());
  EXPECT_EQ(ReadStringArray(h.memory, kBuf, &total).value(), std::vector<std::string>{"ab"});
  EXPECT_EQ(total, 8u + 3u);
  // One string longer than MAX_ARG_STRLEN: E2BIG.
  const std::string long_arg(kMaxArgString + 10, 'x');
  ASSERT_TRUE(h.memory.Write(kBuf + 4096, long_arg.c_str(), long_arg.size() + 1).has_value());
  ASSERT_TRUE(h.memory.WriteObject(kBuf, kBuf + 4096).has_value());
  total = 0;
  EXPECT_EQ(ReadStringArray(h.memory, kBuf, &total).error().code(), E2BIG);
  // execve of a path that does not exist (no --dir): ENOENT; /proc/self/exe without the
  // program's file: ENOENT too.
  SyscallContext context{h.memory, h.state};
  EXPECT_EQ(ReadExecRequest(context, SyscallArgs{SYS_execve, {kBuf + 64, 0, 0, 0, 0, 0}}, -1)
                .error()
                .code(),
            ENOENT);
  ASSERT_TRUE(h.memory.Write(kBuf + 128, "/proc/self/exe", 15).has_value());
  EXPECT_EQ(ReadExecRequest(context, SyscallArgs{SYS_execve, {kBuf + 128, 0, 0, 0, 0, 0}}, -1)
                .error()
                .code(),
            ENOENT);
}

}  // namespace
}  // namespace flurry
