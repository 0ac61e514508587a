// The syscall layer's interface: what a handler receives and returns, and the table that maps
// x86-64 Linux syscall numbers to handlers.
//
// Handlers run on the vCPU thread while the vCPU is stopped at a syscall exit. They return the
// value the guest sees in RAX (negative errno on failure, as the Linux ABI does) or ask the VMM
// to end the guest. Every guest pointer goes through GuestMemory's checked accessors: a bad
// pointer is -EFAULT, never a VMM crash.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <set>
#include <string>

#include "guest/guest_state.h"
#include "guest/process_table.h"
#include "memory/guest_memory.h"

namespace flurry {

struct SyscallArgs {
  uint64_t nr = 0;
  std::array<uint64_t, 6> arg{};  // rdi, rsi, rdx, r10, r8, r9
};

struct SyscallResult {
  enum class Action {
    kReturn,      // RAX = value
    kExit,        // the process ends with status `value`
    kBlock,       // park the thread as GuestState::threads.block says (a multi-threaded guest)
    kExitThread,  // the calling thread ends; others remain
    kYield,       // RAX = value, and let another runnable thread run first
    kFork,        // a new process as GuestState::threads.fork says (RAX: its pid; 0 in it)
  };
  int64_t value = 0;  // RAX for kReturn/kYield; exit status for kExit
  Action action = Action::kReturn;

  static SyscallResult Return(int64_t value) { return {value, Action::kReturn}; }
  static SyscallResult Errno(int err) { return {-static_cast<int64_t>(err), Action::kReturn}; }
  static SyscallResult Exit(int status) { return {status, Action::kExit}; }
  static SyscallResult Block() { return {0, Action::kBlock}; }
  static SyscallResult ExitThread() { return {0, Action::kExitThread}; }
  static SyscallResult Yield() { return {0, Action::kYield}; }
  static SyscallResult Fork() { return {0, Action::kFork}; }
};

// Everything a handler may touch. Owned by the Vm; used only on its vCPU thread.
struct SyscallContext {
  GuestMemory& memory;
  GuestState& state;
  // Set when the VM is being stopped (--timeout): a blocking handler interrupted by a signal
  // returns EINTR then, and otherwise resumes waiting.
  const std::atomic<bool>* stop_requested = nullptr;
  // The VMM's service for blocking handlers (see KeepWaiting); may be null.
  bool (*serve_interrupt)(void* arg) = nullptr;
  void* serve_interrupt_arg = nullptr;
  // The guest's stack pointer at the syscall (sigaltstack tells whether it is on the
  // alternate stack).
  uint64_t rsp = 0;
  // The VM's other processes (wait4, kill, process groups); null or invalid: this one alone.
  ProcessTable* processes = nullptr;

  bool HasProcesses() const { return processes != nullptr && processes->valid(); }
  bool Stopping() const { return stop_requested != nullptr && stop_requested->load(); }

  // For a handler whose blocking host call was interrupted (EINTR): serves what interrupted
  // it (control requests: status, pause, snapshot, clone, ...), then says whether to go on
  // waiting. False: give up now — the VM is stopping (return EINTR), or this process has just
  // become a clone of the VM, whose CPU state is already loaded (the result is discarded).
  bool KeepWaiting() const {
    if (Stopping()) return false;
    if (serve_interrupt != nullptr && !serve_interrupt(serve_interrupt_arg)) return false;
    return !Stopping();
  }
};

using SyscallHandler = SyscallResult (*)(SyscallContext&, const SyscallArgs&);

class SyscallTable {
 public:
  static constexpr uint64_t kMaxSyscall = 512;

  // A table with every syscall flurry implements registered.
  static SyscallTable Default();

  void Register(uint64_t nr, SyscallHandler handler);
  // Runs the handler for args.nr. Unknown numbers return -ENOSYS and are reported once each on
  // stderr, by name ("flurry: guest called unsupported syscall 'io_uring_setup' (425)").
  SyscallResult Dispatch(SyscallContext& context, const SyscallArgs& args);

 private:
  std::array<SyscallHandler, kMaxSyscall> handlers_{};
  std::set<uint64_t> reported_unknown_;
};

// Registration, one function per family of syscalls (each in its own syscalls_*.cc).
void RegisterMemorySyscalls(SyscallTable& table);   // brk, mmap, munmap, mremap, madvise, mprotect
void RegisterFileSyscalls(SyscallTable& table);     // read/write/openat/... on the fd table
void RegisterTimeSyscalls(SyscallTable& table);     // clock_gettime, nanosleep, ...
void RegisterProcessSyscalls(SyscallTable& table);  // exit, getpid, uname, arch_prctl, ...
void RegisterSignalSyscalls(SyscallTable& table);   // rt_sigaction, rt_sigprocmask, kill, ...
void RegisterTimerSyscalls(SyscallTable& table);    // alarm, setitimer, getitimer
void RegisterPosixTimerSyscalls(SyscallTable& table);  // timer_create, timer_settime, ...
void RegisterThreadSyscalls(SyscallTable& table);      // clone, clone3, futex, exit, sched_yield
void RegisterWaitSyscalls(SyscallTable& table);        // wait4, waitid, process groups, sessions
void RegisterPollSyscalls(SyscallTable& table);        // poll, ppoll, select, pselect6

// Converts a memory access error into the -errno a guest sees (EFAULT unless the error says
// otherwise).
inline SyscallResult ErrnoFrom(const Error& error) {
  return SyscallResult::Errno(error.code_or(EFAULT));
}

}  // namespace flurry
