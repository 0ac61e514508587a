// Thread syscalls: clone and clone3 with the flags of pthread_create, futex, the end of a
// thread (exit) and sched_yield. The handlers decide; the VMM carries out what they ask
// through GuestState::threads (a new thread's CPU state, parking the caller) and
// SyscallResult's actions (vm_threads.cc). A new process (fork, vfork, clone without
// CLONE_THREAD) is a request the VMM carries out by forking itself (vm_process.cc).
#include <linux/futex.h>
#include <linux/sched.h>
#include <sys/syscall.h>

#include <algorithm>
#include <csignal>
#include <cstdio>
#include <ctime>

#include "guest/guest_time.h"
#include "guest/syscall.h"

namespace flurry {
namespace {

// At most this many threads in one guest (Linux's threads-max is in the tens of thousands; a
// VMM-multiplexed guest gains nothing from more).
constexpr size_t kMaxThreads = 1024;

// A combination of clone flags flurry does not offer (sharing an fd table or signal handlers
// between processes, new namespaces, ...): say so once.
SyscallResult UnsupportedClone(const SyscallArgs& a, uint64_t flags) {
  static bool reported = false;
  if (!reported) {
    reported = true;
    std::fprintf(stderr,
                 "flurry: guest called clone with flags %#llx (syscall %llu), which flurry does "
                 "not offer (threads, fork, vfork and posix_spawn are); returning EINVAL\n",
                 static_cast<unsigned long long>(flags), static_cast<unsigned long long>(a.nr));
  }
  return SyscallResult::Errno(EINVAL);
}

struct CloneRequest {
  uint64_t flags = 0;
  uint64_t stack = 0;  // the child's RSP (0: the caller's)
  uint64_t parent_tid = 0;
  uint64_t child_tid = 0;
  uint64_t tls = 0;
  int exit_signal = 0;  // a new process's (clone: the low byte of the flags)
};

// The flags pthread_create passes, and those a thread may add.
constexpr uint64_t kThreadFlags = CLONE_VM | CLONE_THREAD | CLONE_SIGHAND;
constexpr uint64_t kThreadExtras = CLONE_FS | CLONE_FILES | CLONE_SYSVSEM | CLONE_SETTLS |
                                   CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID | CLONE_CHILD_SETTID |
                                   CLONE_DETACHED | CLONE_IO;

// Thread ids count up from the pid and wrap at Linux's largest pid, skipping ids in use (the
// guest has at most 1024 threads, so the search ends).
int32_t NextTid(const GuestState& state) {
  constexpr int32_t kMaxTid = 4'194'303;  // PID_MAX_LIMIT - 1
  int32_t tid = state.threads.last_tid != 0 ? state.threads.last_tid : state.identity.pid;
  for (;;) {
    tid = tid >= kMaxTid || tid < 1 ? 2 : tid + 1;
    if (tid != state.identity.pid && tid != state.identity.tid &&
        state.threads.Find(tid) == nullptr) {
      return tid;
    }
  }
}

SyscallResult CloneThread(SyscallContext& c, const SyscallArgs& a, const CloneRequest& r) {
  // Linux's rules: a thread shares the signal handlers, which need the shared memory.
  if ((r.flags & CLONE_THREAD) && !(r.flags & CLONE_SIGHAND)) return SyscallResult::Errno(EINVAL);
  if ((r.flags & CLONE_SIGHAND) && !(r.flags & CLONE_VM)) return SyscallResult::Errno(EINVAL);
  if ((r.flags & kThreadFlags) != kThreadFlags) return UnsupportedClone(a, r.flags);
  if (r.flags & ~(kThreadFlags | kThreadExtras)) return SyscallResult::Errno(EINVAL);
  if ((r.flags & CLONE_SETTLS) && r.tls >= (1ULL << 47)) return SyscallResult::Errno(EPERM);
  ThreadTable& threads = c.state.threads;
  if (threads.count() >= kMaxThreads) return SyscallResult::Errno(EAGAIN);
  // Thread ids and pids share one space: with other processes, the VM's table hands them out.
  int32_t tid = NextTid(c.state);
  if (c.HasProcesses()) {  // never one of this process's own live ids either
    do {
      tid = c.processes->AllocateId();
    } while (tid == c.state.identity.pid || tid == c.state.identity.tid ||
             c.state.threads.Find(tid) != nullptr);
  }
  if (r.flags & CLONE_PARENT_SETTID) {
    if (auto w = c.memory.WriteObject(r.parent_tid, tid); !w) return ErrnoFrom(w.error());
  }
  if (r.flags & CLONE_CHILD_SETTID) {
    (void)c.memory.WriteObject(r.child_tid, tid);  // the child's own write: a fault is ignored
  }
  threads.last_tid = tid;
  threads.spawn =
      ThreadSpawn{.tid = tid,
                  .stack = r.stack,
                  .tls = r.tls,
                  .set_tls = (r.flags & CLONE_SETTLS) != 0,
                  .clear_child_tid = (r.flags & CLONE_CHILD_CLEARTID) ? r.child_tid : 0};
  return SyscallResult::Return(tid);
}

// The flags of a new process flurry offers: fork's (glibc passes the tid ones), vfork's and
// posix_spawn's (CLONE_VM | CLONE_VFORK: the child runs as after a fork, on its own copy of
// memory, while the parent goes on; see docs/design.md "Processes").
constexpr uint64_t kProcessFlags = CLONE_VM | CLONE_VFORK | CLONE_SETTLS | CLONE_PARENT_SETTID |
                                   CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID;

SyscallResult CloneProcess(SyscallContext& c, const SyscallArgs& a, const CloneRequest& r) {
  if ((r.flags & ~kProcessFlags) != 0) return UnsupportedClone(a, r.flags);
  if ((r.flags & CLONE_VM) && !(r.flags & CLONE_VFORK)) return UnsupportedClone(a, r.flags);
  if ((r.flags & CLONE_SETTLS) && r.tls >= (1ULL << 47)) return SyscallResult::Errno(EPERM);
  if (!c.HasProcesses()) return SyscallResult::Errno(ENOSYS);
  c.state.threads.fork =
      ProcessFork{.stack = r.stack,
                  .tls = r.tls,
                  .set_tls = (r.flags & CLONE_SETTLS) != 0,
                  .child_tid = r.child_tid,
                  .child_settid = (r.flags & CLONE_CHILD_SETTID) != 0,
                  .child_cleartid = (r.flags & CLONE_CHILD_CLEARTID) != 0,
                  .parent_tid = (r.flags & CLONE_PARENT_SETTID) ? r.parent_tid : 0,
                  .exit_signal = r.exit_signal};
  return SyscallResult::Fork();
}

// A thread (CLONE_THREAD, or CLONE_VM without CLONE_VFORK, which Linux refuses without
// CLONE_SIGHAND... as CloneThread checks) or a process.
SyscallResult CloneTask(SyscallContext& c, const SyscallArgs& a, const CloneRequest& r) {
  if ((r.flags & CLONE_THREAD) || (r.flags & CLONE_SIGHAND) ||
      ((r.flags & CLONE_VM) && !(r.flags & CLONE_VFORK))) {
    return CloneThread(c, a, r);
  }
  return CloneProcess(c, a, r);
}

// clone(flags, stack, parent_tid, child_tid, tls): x86-64's argument order.
SyscallResult SysClone(SyscallContext& c, const SyscallArgs& a) {
  // Linux reads the low 32 bits of the flags (an int sign-extended on the way is fine).
  const uint64_t flags = (a.arg[0] & 0xffffffffULL) & ~uint64_t{CSIGNAL};
  const auto exit_signal = static_cast<int>(a.arg[0] & CSIGNAL);
  if (exit_signal > SignalState::kSignals) return SyscallResult::Errno(EINVAL);
  return CloneTask(c, a, CloneRequest{flags, a.arg[1], a.arg[2], a.arg[3], a.arg[4], exit_signal});
}

// struct clone_args as of Linux 5.7 (CLONE_ARGS_SIZE_VER2).
struct GuestCloneArgs {
  uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
      set_tid_size, cgroup;
};
static_assert(sizeof(GuestCloneArgs) == 88);

SyscallResult SysClone3(SyscallContext& c, const SyscallArgs& a) {
  constexpr uint64_t kVer0Size = 64;
  const uint64_t size = a.arg[1];
  if (size < kVer0Size) return SyscallResult::Errno(EINVAL);
  if (size > 4096) return SyscallResult::Errno(E2BIG);
  GuestCloneArgs args{};
  const uint64_t known = std::min<uint64_t>(size, sizeof args);
  if (auto r = c.memory.Read(a.arg[0], &args, known); !r) return ErrnoFrom(r.error());
  for (uint64_t at = sizeof args; at < size; at += 8) {  // newer fields must be unused
    uint64_t word = 0;
    if (auto r = c.memory.Read(a.arg[0] + at, &word, std::min<uint64_t>(8, size - at)); !r) {
      return ErrnoFrom(r.error());
    }
    if (word != 0) return SyscallResult::Errno(E2BIG);
  }
  if (args.exit_signal > 64 || ((args.flags & CLONE_THREAD) && args.exit_signal != 0)) {
    return SyscallResult::Errno(EINVAL);
  }
  if (args.set_tid != 0 || args.set_tid_size != 0 || args.cgroup != 0 ||
      (args.flags & CLONE_PIDFD)) {
    return SyscallResult::Errno(EINVAL);  // choosing tids, cgroups and pidfds: not offered
  }
  if ((args.stack == 0) != (args.stack_size == 0)) return SyscallResult::Errno(EINVAL);
  return CloneTask(
      c, a,
      CloneRequest{args.flags, args.stack == 0 ? 0 : args.stack + args.stack_size, args.parent_tid,
                   args.child_tid, args.tls, static_cast<int>(args.exit_signal)});
}

SyscallResult SysFork(SyscallContext& c, const SyscallArgs& a) {
  return CloneProcess(c, a, CloneRequest{.exit_signal = SIGCHLD});
}
SyscallResult SysVfork(SyscallContext& c, const SyscallArgs& a) {
  return CloneProcess(c, a, CloneRequest{.flags = CLONE_VM | CLONE_VFORK, .exit_signal = SIGCHLD});
}

// Linux's robust-list walk at a thread's death: each robust mutex the thread still holds
// (its futex word names the thread) is marked FUTEX_OWNER_DIED and one waiter woken, so the
// next locker gets EOWNERDEAD instead of waiting forever. A list the guest corrupted ends the
// walk; at most 2048 entries, as Linux.
void ReleaseRobustMutexes(SyscallContext& c) {
  struct RobustListHead {  // struct robust_list_head
    uint64_t next;
    int64_t futex_offset;
    uint64_t list_op_pending;
  };
  const uint64_t head = c.state.identity.robust_list;
  if (head == 0) return;
  auto list = c.memory.ReadObject<RobustListHead>(head);
  if (!list) return;
  const auto tid = static_cast<uint32_t>(c.state.identity.tid);
  auto release = [&](uint64_t entry) {
    const uint64_t word_addr = entry + static_cast<uint64_t>(list->futex_offset);
    auto word = c.memory.ReadObject<uint32_t>(word_addr);
    if (!word || (*word & FUTEX_TID_MASK) != tid) return;
    const uint32_t died = (*word & FUTEX_WAITERS) | FUTEX_OWNER_DIED;
    if (!c.memory.WriteObject(word_addr, died)) return;
    if (*word & FUTEX_WAITERS) c.state.threads.FutexWake(word_addr, 1, FUTEX_BITSET_MATCH_ANY);
  };
  const uint64_t pending = list->list_op_pending & ~uint64_t{1};
  uint64_t entry = list->next;
  for (int left = 2048; entry != head && entry != 0 && left > 0; --left) {
    auto next = c.memory.ReadObject<uint64_t>(entry & ~uint64_t{1});
    if (!next) break;
    if ((entry & ~uint64_t{1}) != pending) release(entry & ~uint64_t{1});
    entry = *next;
  }
  if (pending != 0) release(pending);
}

// exit: the calling thread ends. Its robust mutexes are released, then its clear_child_tid
// (CLONE_CHILD_CLEARTID, set_tid_address) is zeroed and one waiter on it woken, which is how
// pthread_join learns of it. The last thread's exit ends the process.
SyscallResult SysExitThread(SyscallContext& c, const SyscallArgs& a) {
  if (c.state.threads.others.empty()) return SyscallResult::Exit(static_cast<int>(a.arg[0] & 0xff));
  ReleaseRobustMutexes(c);
  if (const uint64_t address = c.state.identity.clear_child_tid; address != 0) {
    if (c.memory.WriteObject(address, uint32_t{0})) {
      c.state.threads.FutexWake(address, 1, FUTEX_BITSET_MATCH_ANY);
    }
  }
  return SyscallResult::ExitThread();
}

SyscallResult SysSchedYield(SyscallContext& c, const SyscallArgs&) {
  return c.state.threads.NextRunnable() >= 0 ? SyscallResult::Yield() : SyscallResult::Return(0);
}

// The deadline of a futex wait on the guest's CLOCK_MONOTONIC (0: none), or -errno.
int64_t FutexDeadline(SyscallContext& c, uint64_t timeout_addr, bool absolute, bool realtime) {
  if (timeout_addr == 0) return 0;
  auto timeout = c.memory.ReadObject<timespec>(timeout_addr);
  if (!timeout) return -static_cast<int64_t>(timeout.error().code_or(EFAULT));
  if (timeout->tv_sec < 0 || timeout->tv_nsec < 0 || timeout->tv_nsec >= 1'000'000'000) {
    return -EINVAL;
  }
  constexpr int64_t kMaxSeconds = INT64_MAX / 1'000'000'000 / 4;
  const int64_t ns =
      TimespecNs(timespec{std::min<int64_t>(timeout->tv_sec, kMaxSeconds), timeout->tv_nsec});
  const int64_t now = GuestMonotonicNs(c.state.monotonic_offset_ns);
  if (!absolute) return now + std::max<int64_t>(ns, 1);
  if (realtime) return now + std::max<int64_t>(ns - HostClockNs(CLOCK_REALTIME), 1);
  return std::max<int64_t>(ns, 1);
}

// FUTEX_WAKE_OP's operation on the word at uaddr2 and its comparison of the old value.
bool WakeOp(uint32_t encoded, uint32_t old, uint32_t* updated) {
  uint32_t op = (encoded >> 28) & 0xf;
  const uint32_t cmp = (encoded >> 24) & 0xf;
  auto sign_extend_12 = [](uint32_t v) { return static_cast<int32_t>(v << 20) >> 20; };
  int32_t oparg = sign_extend_12((encoded >> 12) & 0xfff);
  const int32_t cmparg = sign_extend_12(encoded & 0xfff);
  if (op & FUTEX_OP_OPARG_SHIFT) {
    oparg = static_cast<int32_t>(1u << (oparg & 31));  // Linux takes an out-of-range shift mod 32
    op &= ~static_cast<uint32_t>(FUTEX_OP_OPARG_SHIFT);
  }
  const auto arg = static_cast<uint32_t>(oparg);
  switch (op) {
    case FUTEX_OP_SET:
      *updated = arg;
      break;
    case FUTEX_OP_ADD:
      *updated = old + arg;
      break;
    case FUTEX_OP_OR:
      *updated = old | arg;
      break;
    case FUTEX_OP_ANDN:
      *updated = old & ~arg;
      break;
    case FUTEX_OP_XOR:
      *updated = old ^ arg;
      break;
    default:
      *updated = old;
      break;
  }
  const auto value = static_cast<int32_t>(old);
  switch (cmp) {
    case FUTEX_OP_CMP_EQ:
      return value == cmparg;
    case FUTEX_OP_CMP_NE:
      return value != cmparg;
    case FUTEX_OP_CMP_LT:
      return value < cmparg;
    case FUTEX_OP_CMP_LE:
      return value <= cmparg;
    case FUTEX_OP_CMP_GT:
      return value > cmparg;
    case FUTEX_OP_CMP_GE:
      return value >= cmparg;
    default:
      return false;
  }
}

bool KnownWakeOp(uint32_t encoded) {
  return (((encoded >> 28) & 0x7) <= FUTEX_OP_XOR) && (((encoded >> 24) & 0xf) <= FUTEX_OP_CMP_GE);
}

// A wake count as Linux reads it: at least one thread is looked at.
int WakeCount(uint64_t value) { return std::max(static_cast<int32_t>(value), 1); }

SyscallResult SysFutex(SyscallContext& c, const SyscallArgs& a) {
  const uint64_t uaddr = a.arg[0];
  const int op = static_cast<int>(a.arg[1]) & FUTEX_CMD_MASK;
  const bool realtime = (static_cast<int>(a.arg[1]) & FUTEX_CLOCK_REALTIME) != 0;
  const auto val = static_cast<uint32_t>(a.arg[2]);
  const uint64_t uaddr2 = a.arg[4];
  const auto val3 = static_cast<uint32_t>(a.arg[5]);
  ThreadTable& threads = c.state.threads;
  if (uaddr % 4 != 0) return SyscallResult::Errno(EINVAL);
  if (realtime && op != FUTEX_WAIT && op != FUTEX_WAIT_BITSET) return SyscallResult::Errno(ENOSYS);
  switch (op) {
    case FUTEX_WAIT:
    case FUTEX_WAIT_BITSET: {
      const uint32_t bitset = op == FUTEX_WAIT ? FUTEX_BITSET_MATCH_ANY : val3;
      if (bitset == 0) return SyscallResult::Errno(EINVAL);
      auto value = c.memory.ReadObject<uint32_t>(uaddr);
      if (!value) return ErrnoFrom(value.error());
      if (*value != val) return SyscallResult::Errno(EAGAIN);
      // Parked even when it is the only thread: a signal handler may wake it, as on Linux.
      const int64_t deadline = FutexDeadline(c, a.arg[3], op == FUTEX_WAIT_BITSET, realtime);
      if (deadline < 0) return SyscallResult::Return(deadline);
      threads.block = ThreadBlock{.wait = ThreadWait::kFutex,
                                  .futex_addr = uaddr,
                                  .futex_bitset = bitset,
                                  .deadline_ns = deadline,
                                  .expiry_result = -ETIMEDOUT};
      return SyscallResult::Block();
    }
    case FUTEX_WAKE:
    case FUTEX_WAKE_BITSET: {
      const uint32_t bitset = op == FUTEX_WAKE ? FUTEX_BITSET_MATCH_ANY : val3;
      if (bitset == 0) return SyscallResult::Errno(EINVAL);
      if (!c.memory.CheckUser(uaddr, 4)) return SyscallResult::Errno(EFAULT);
      return SyscallResult::Return(threads.FutexWake(uaddr, WakeCount(val), bitset));
    }
    case FUTEX_REQUEUE:
    case FUTEX_CMP_REQUEUE: {
      if (uaddr2 % 4 != 0) return SyscallResult::Errno(EINVAL);
      const auto requeue = static_cast<int32_t>(a.arg[3]);  // the timeout slot holds val2
      if (static_cast<int32_t>(val) < 0 || requeue < 0) return SyscallResult::Errno(EINVAL);
      if (!c.memory.CheckUser(uaddr2, 4)) return SyscallResult::Errno(EFAULT);
      if (op == FUTEX_CMP_REQUEUE) {
        auto value = c.memory.ReadObject<uint32_t>(uaddr);
        if (!value) return ErrnoFrom(value.error());
        if (*value != val3) return SyscallResult::Errno(EAGAIN);
      } else if (!c.memory.CheckUser(uaddr, 4)) {
        return SyscallResult::Errno(EFAULT);
      }
      // Unlike FUTEX_WAKE, a requeue wakes exactly `val` (0: none) before it moves the rest.
      const int woken = threads.FutexWake(uaddr, static_cast<int>(val), FUTEX_BITSET_MATCH_ANY);
      const int moved = threads.FutexRequeue(uaddr, uaddr2, requeue);
      return SyscallResult::Return(woken + moved);
    }
    case FUTEX_WAKE_OP: {
      if (uaddr2 % 4 != 0) return SyscallResult::Errno(EINVAL);
      if (!KnownWakeOp(val3)) return SyscallResult::Errno(ENOSYS);
      if (auto w = c.memory.CheckAccess(uaddr2, 4, GuestAccess::kWrite); !w) {
        return ErrnoFrom(w.error());
      }
      auto old = c.memory.ReadObject<uint32_t>(uaddr2);
      if (!old) return ErrnoFrom(old.error());
      uint32_t updated = *old;
      const bool also_second = WakeOp(val3, *old, &updated);
      if (auto w = c.memory.WriteObject(uaddr2, updated); !w) return ErrnoFrom(w.error());
      int woken = threads.FutexWake(uaddr, WakeCount(val), FUTEX_BITSET_MATCH_ANY);
      if (also_second) {
        woken += threads.FutexWake(uaddr2, WakeCount(a.arg[3]), FUTEX_BITSET_MATCH_ANY);
      }
      return SyscallResult::Return(woken);
    }
    default:  // priority inheritance (FUTEX_LOCK_PI, ...) and FUTEX_WAIT_REQUEUE_PI
      return SyscallResult::Errno(ENOSYS);
  }
}

}  // namespace

void RegisterThreadSyscalls(SyscallTable& table) {
  table.Register(SYS_clone, SysClone);
  table.Register(SYS_clone3, SysClone3);
  table.Register(SYS_exit, SysExitThread);
  table.Register(SYS_futex, SysFutex);
  table.Register(SYS_sched_yield, SysSchedYield);
  table.Register(SYS_fork, SysFork);
  table.Register(SYS_vfork, SysVfork);
}

}  // namespace flurry
