// The syscalls between the guest's processes that the VM's process table serves
// (guest/process_table.h): wait4 and waitid, getppid, process groups and sessions. A new
// process is made by the VMM (syscalls_thread.cc asks, vm_process.cc forks); kill to other
// processes is in syscalls_signal.cc.
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <cstring>

#include "guest/syscall.h"

namespace flurry {
namespace {

constexpr int kWaitOptions = WNOHANG | WUNTRACED | WCONTINUED | __WNOTHREAD | __WCLONE | __WALL;

// A wait for a child that has not ended: parks the caller until one may have (a child's exit
// wakes this process's event fd; a child VMM that dies closes its pidfd), unless WNOHANG.
SyscallResult WaitForChild(SyscallContext& c) {
  c.state.threads.block =
      ThreadBlock{.wait = ThreadWait::kFd, .poll_fds = c.processes->ChildEventFds()};
  return SyscallResult::Block();
}

// wait4(pid, wstatus, options, rusage): stopped and continued children are never reported
// (flurry has no job control), so WUNTRACED and WCONTINUED change nothing.
SyscallResult SysWait4(SyscallContext& c, const SyscallArgs& a) {
  const auto selector = static_cast<int32_t>(a.arg[0]);
  const auto options = static_cast<int>(a.arg[2]);
  if ((options & ~kWaitOptions) != 0 || selector == INT32_MIN) return SyscallResult::Errno(EINVAL);
  if (!c.HasProcesses()) return SyscallResult::Errno(ECHILD);
  c.processes->DrainEvents();  // before looking: an exit after this wakes the wait
  const ProcessTable::Waitable ended = c.processes->FindEnded(selector, /*reap=*/false);
  if (!ended.any_child) return SyscallResult::Errno(ECHILD);
  if (ended.pid == 0) {
    if (options & WNOHANG) return SyscallResult::Return(0);
    return WaitForChild(c);
  }
  if (a.arg[1] != 0) {
    if (auto w = c.memory.WriteObject(a.arg[1], ended.wait_status); !w) return ErrnoFrom(w.error());
  }
  if (a.arg[3] != 0) {
    const rusage none{};  // flurry does not account a child's time
    if (auto w = c.memory.WriteObject(a.arg[3], none); !w) return ErrnoFrom(w.error());
  }
  c.processes->FindEnded(ended.pid, /*reap=*/true);
  return SyscallResult::Return(ended.pid);
}

// The part of siginfo_t waitid fills (x86-64 layout).
struct WaitidInfo {
  int32_t signo, errno_value, code, pad;
  int32_t pid;
  uint32_t uid;
  int32_t status;
  uint8_t rest[128 - 28];
};
static_assert(sizeof(WaitidInfo) == 128);

// waitid(idtype, id, infop, options, rusage): P_ALL, P_PID and P_PGID; WEXITED only.
SyscallResult SysWaitid(SyscallContext& c, const SyscallArgs& a) {
  const auto idtype = static_cast<int>(a.arg[0]);
  const auto id = static_cast<int32_t>(a.arg[1]);
  const auto options = static_cast<int>(a.arg[3]);
  if ((options & ~(kWaitOptions | WEXITED | WSTOPPED | WNOWAIT)) != 0 ||
      (options & (WEXITED | WSTOPPED | WCONTINUED)) == 0) {
    return SyscallResult::Errno(EINVAL);
  }
  using Selector = ProcessTable::ChildSelector;
  Selector selector;
  switch (idtype) {
    case P_ALL:
      break;
    case P_PID:
      if (id <= 0) return SyscallResult::Errno(EINVAL);
      selector = {Selector::kPid, id};
      break;
    case P_PGID:  // 0: the caller's own group (Linux 5.4)
      if (id < 0) return SyscallResult::Errno(EINVAL);
      selector = id == 0 ? Selector{Selector::kOwnGroup, 0} : Selector{Selector::kGroup, id};
      break;
    default:
      return SyscallResult::Errno(EINVAL);
  }
  if (!c.HasProcesses()) return SyscallResult::Errno(ECHILD);
  c.processes->DrainEvents();
  const ProcessTable::Waitable ended = c.processes->FindEnded(selector, /*reap=*/false);
  if (!ended.any_child) return SyscallResult::Errno(ECHILD);
  if ((options & WEXITED) == 0) {  // only stops or continues: none ever comes
    if (options & WNOHANG) return SyscallResult::Return(0);
    return WaitForChild(c);
  }
  WaitidInfo info{};
  if (ended.pid == 0 && !(options & WNOHANG)) return WaitForChild(c);
  if (ended.pid != 0) {
    info.signo = SIGCHLD;
    info.pid = ended.pid;
    if (WIFEXITED(ended.wait_status)) {
      info.code = CLD_EXITED;
      info.status = WEXITSTATUS(ended.wait_status);
    } else {
      info.code = WCOREDUMP(ended.wait_status) ? CLD_DUMPED : CLD_KILLED;
      info.status = WTERMSIG(ended.wait_status);
    }
  }
  if (a.arg[2] != 0) {
    if (auto w = c.memory.WriteObject(a.arg[2], info); !w) return ErrnoFrom(w.error());
  }
  if (a.arg[4] != 0) {
    const rusage none{};
    if (auto w = c.memory.WriteObject(a.arg[4], none); !w) return ErrnoFrom(w.error());
  }
  if (ended.pid != 0 && !(options & WNOWAIT)) c.processes->FindEnded(ended.pid, /*reap=*/true);
  return SyscallResult::Return(0);
}

SyscallResult SysGetppid(SyscallContext& c, const SyscallArgs&) {
  // A child's parent is in the table (an orphan's is init); init's is the VM's (its VMM's).
  return SyscallResult::Return(c.HasProcesses() && !c.processes->is_init()
                                   ? c.processes->ParentPid()
                                   : c.state.identity.ppid);
}

SyscallResult FromResult(const Result<int32_t>& r) {
  return r ? SyscallResult::Return(*r) : ErrnoFrom(r.error());
}

// A pid argument: 0 or the caller's own pid is the caller; alone in the VM, nobody else.
bool IsSelf(const SyscallContext& c, int32_t pid) {
  return pid == 0 || pid == c.state.identity.pid;
}

SyscallResult SysGetpgid(SyscallContext& c, const SyscallArgs& a) {
  const auto pid = static_cast<int32_t>(a.arg[0]);
  if (c.HasProcesses()) return FromResult(c.processes->GroupOf(IsSelf(c, pid) ? 0 : pid));
  if (pid < 0) return SyscallResult::Errno(EINVAL);
  return IsSelf(c, pid) ? SyscallResult::Return(c.state.identity.pid) : SyscallResult::Errno(ESRCH);
}
SyscallResult SysGetpgrp(SyscallContext& c, const SyscallArgs&) {
  return SysGetpgid(c, SyscallArgs{SYS_getpgid, {0, 0, 0, 0, 0, 0}});
}
SyscallResult SysGetsid(SyscallContext& c, const SyscallArgs& a) {
  const auto pid = static_cast<int32_t>(a.arg[0]);
  if (c.HasProcesses()) return FromResult(c.processes->SessionOf(IsSelf(c, pid) ? 0 : pid));
  return IsSelf(c, pid) ? SyscallResult::Return(c.state.identity.pid) : SyscallResult::Errno(ESRCH);
}
SyscallResult SysSetpgid(SyscallContext& c, const SyscallArgs& a) {
  const auto pid = static_cast<int32_t>(a.arg[0]);
  const auto pgid = static_cast<int32_t>(a.arg[1]);
  if (pid < 0 || pgid < 0) return SyscallResult::Errno(EINVAL);
  if (!c.HasProcesses())
    return IsSelf(c, pid) ? SyscallResult::Errno(EPERM) : SyscallResult::Errno(ESRCH);
  auto r = c.processes->SetGroup(IsSelf(c, pid) ? 0 : pid, pgid);
  return r ? SyscallResult::Return(0) : ErrnoFrom(r.error());
}
SyscallResult SysSetsid(SyscallContext& c, const SyscallArgs&) {
  if (!c.HasProcesses()) return SyscallResult::Errno(EPERM);  // init leads its group
  return FromResult(c.processes->NewSession());
}

}  // namespace

void RegisterWaitSyscalls(SyscallTable& table) {
  table.Register(SYS_wait4, SysWait4);
  table.Register(SYS_waitid, SysWaitid);
  table.Register(SYS_getppid, SysGetppid);
  table.Register(SYS_getpgid, SysGetpgid);
  table.Register(SYS_getpgrp, SysGetpgrp);
  table.Register(SYS_getsid, SysGetsid);
  table.Register(SYS_setpgid, SysSetpgid);
  table.Register(SYS_setsid, SysSetsid);
}

}  // namespace flurry
