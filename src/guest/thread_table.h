// The guest's threads. The VMM runs them on the backend's lanes (stub threads, vCPUs), more
// threads than lanes multiplexed as a kernel does: the thread whose stop the VMM serves stands
// where single-threaded code keeps it (the backend's selected lane; GuestState's identity,
// signal mask, alternate stack and segment bases), and every other thread is a GuestThread
// here: running on another lane (`lane`), or with its CPU state saved and, when it is parked
// in a syscall (futex wait, sleep, host fds), what it waits for.
// See docs/design.md ("Threads").
//
// Plain data plus pure functions over it; touched only on the VM's run thread.
#pragma once

#include <poll.h>

#include <array>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "arch/x86_64/user_cpu_state.h"
#include "guest/guest_stack.h"

namespace flurry {

enum class ThreadWait : uint8_t {
  kRunnable,  // ready to run
  kFutex,     // FUTEX_WAIT on futex_addr
  kSleep,     // nanosleep, clock_nanosleep
  kSignal,    // pause, rt_sigtimedwait: a signal (signal_set: also blocked ones)
  kFd,        // host fds of the VMM (poll_fds) to become ready: then the syscall is made again
};

// What a syscall handler that cannot finish now asks for its thread: park it until woken, or
// until deadline_ns.
// A blocking write to a pipe that wrote part of its bytes and then found the pipe full parks
// for the rest: Linux's pipe_write returns only when all are written. Made again when the pipe
// has room, the same write goes on after the `done` bytes; a signal ends it with `done`.
struct PartialWrite {
  uint64_t nr = 0;                 // write or writev
  std::array<uint64_t, 3> args{};  // fd, buffer or iovec array, count
  uint64_t done = 0;               // bytes written so far

  bool Matches(uint64_t call, const std::array<uint64_t, 3>& call_args) const {
    return nr == call && args == call_args;
  }
};

struct ThreadBlock {
  ThreadWait wait = ThreadWait::kFutex;
  uint64_t futex_addr = 0;
  uint32_t futex_bitset = 0;
  int64_t deadline_ns = 0;    // the guest's CLOCK_MONOTONIC; 0: none
  int64_t expiry_result = 0;  // RAX when the deadline passes (-ETIMEDOUT, or 0 for a sleep)
  uint64_t remain_addr = 0;   // kSleep, relative: where an interrupted sleep says what is left
  // kSignal: blocked signals that end the wait (rt_sigtimedwait's); kFd of a signalfd read:
  // its mask (a blocked one sent to this thread alone makes the read again).
  uint64_t signal_set = 0;
  bool suspend = false;  // kSignal: rt_sigsuspend, waiting under `suspend_mask`
  uint64_t suspend_mask = 0;
  // kFd: the VMM's host fds and the events the syscall waits for (a pipe's end, borrowed
  // stdio, ...). Any revents (POLLHUP, POLLERR and POLLNVAL too) restarts the thread: its
  // syscall, made again, then succeeds or parks again.
  std::vector<pollfd> poll_fds{};
  // The deadline restarts the thread (its syscall, made again, sees its timeout over: select
  // zeroed it in guest memory) instead of returning expiry_result.
  bool restart_at_deadline = false;
  // kFd: a write that parks with part of its bytes written.
  std::optional<PartialWrite> partial{};

  // The signal mask that decides what ends this wait for a thread whose own mask is `blocked`.
  uint64_t WaitMask(uint64_t blocked) const { return suspend ? suspend_mask : blocked; }
};

// A thread that clone made in this syscall (the VMM gives it the caller's CPU state).
struct ThreadSpawn {
  int32_t tid = 0;
  uint64_t stack = 0;  // the child's RSP (0: the parent's)
  uint64_t tls = 0;    // the child's FS base, with set_tls
  bool set_tls = false;
  uint64_t clear_child_tid = 0;  // CLONE_CHILD_CLEARTID
};

// A process that fork, vfork or clone (without CLONE_THREAD) made in this syscall: the VMM
// forks itself (src/vmm/vm_process.cc) and the child resumes from the caller's registers.
struct ProcessFork {
  uint64_t stack = 0;  // the child's RSP (0: the caller's)
  uint64_t tls = 0;    // the child's FS base, with set_tls
  bool set_tls = false;
  uint64_t child_tid = 0;  // CLONE_CHILD_SETTID/CLEARTID: the address in the child
  bool child_settid = false;
  bool child_cleartid = false;
  uint64_t parent_tid = 0;  // CLONE_PARENT_SETTID: the address in the parent (0: none)
  int exit_signal = 0;      // what the parent gets when the child ends (SIGCHLD for fork)
};

struct GuestThread {
  int32_t tid = 0;
  x86::UserCpuState cpu;  // as it was switched out (FS/GS bases included)
  uint64_t clear_child_tid = 0;
  uint64_t robust_list = 0;
  uint64_t robust_list_len = 0;
  uint64_t blocked = 0;         // its signal mask
  uint64_t thread_pending = 0;  // signals sent to it (tgkill)
  GuestStack altstack{};

  // Switched out in a syscall: `cpu` stands past it, and `result` goes into RAX when it runs.
  bool in_syscall = false;
  uint64_t syscall_nr = 0;
  int64_t result = 0;
  ThreadWait wait = ThreadWait::kRunnable;
  ThreadBlock block;             // what it waits for (or waited for: kept after a wake)
  bool woken_by_signal = false;  // its wait ended with EINTR for a signal not yet delivered
  bool restart = false;          // woken to make its syscall again (a signal it waits for is there)
  // A partial write it makes again (ThreadTable::resumed) when switched out before it did.
  std::optional<PartialWrite> resumed;
  uint64_t wait_seq = 0;  // futex waiters wake oldest first
  // Running on this backend lane (-1: none), in parallel with the thread in GuestState: its
  // registers are the lane's and `cpu` holds only its FS/GS bases. Runnable, never parked.
  // Never captured: the VMM gathers every lane's thread before a snapshot or a clone.
  int lane = -1;

  bool parked() const { return wait != ThreadWait::kRunnable; }
};

struct ThreadTable {
  // Every thread but the running one; the front runs next (round robin).
  std::vector<GuestThread> others;
  int32_t last_tid = 0;   // the newest thread's tid (0: none made yet)
  uint64_t wait_seq = 0;  // counts parkings

  // A handler's requests to the VMM for the calling thread (set and taken in one syscall
  // stop; never captured).
  std::optional<ThreadBlock> block;
  std::optional<ThreadSpawn> spawn;
  std::optional<ProcessFork> fork;
  // The running thread's partial write, made again now that its pipe has room: set by the VMM
  // when the thread runs again, taken by the write (src/guest/syscalls_file.cc), dropped at
  // the thread's next syscall otherwise. Never captured.
  std::optional<PartialWrite> resumed;

  size_t count() const { return others.size() + 1; }
  GuestThread* Find(int32_t tid);
  const GuestThread* Find(int32_t tid) const;

  // Wakes up to `count` threads waiting on the futex at `addr` whose bitset meets `bitset`,
  // oldest first (they return 0). Returns how many woke.
  int FutexWake(uint64_t addr, int count, uint32_t bitset);
  // Moves up to `count` of the waiters left on `from` to wait on `to`. Returns how many moved.
  int FutexRequeue(uint64_t from, uint64_t to, int count);
  // Parked threads whose deadline is at or before `now_ns` wake with their expiry result (or
  // are restarted: restart_at_deadline). Returns how many woke.
  int WakeExpired(int64_t now_ns);
  // The earliest deadline of a parked thread (0: none).
  int64_t EarliestDeadline() const;
  // The index in `others` of the next thread to run (-1: none is runnable; a thread running on
  // a lane is not).
  int NextRunnable() const;

  // Whether a thread is parked in a kFd wait.
  bool WaitsForFds() const;
  // The host fds the kFd waiters wait for, each waiter's poll_fds in turn, in `others` order:
  // one poll() over them tells which waits are over (WakeReadyFds). Empty: no kFd waiter.
  std::vector<pollfd> FdWaitSet() const;
  // Restarts (RestartThread) each kFd waiter with any revents in `polled`, the FdWaitSet()
  // taken before with no change to the table since, as poll() filled it. Returns how many.
  int WakeReadyFds(std::span<const pollfd> polled);
};

// Wakes a parked thread: it runs again with RAX = `result`.
void WakeThread(GuestThread& thread, int64_t result);
// Ends a parked thread's wait for a signal (EINTR). Should no signal be left for it when it is
// about to run (another thread took it, it was ignored), Repark makes it wait on as before.
void InterruptThread(GuestThread& thread);
// Ends a wait by making the thread's syscall again: a kSignal wait for a signal of its set
// (which the syscall then takes), a kFd wait whose fd is ready.
void RestartThread(GuestThread& thread);
void Repark(GuestThread& thread);

// The CPU state `thread` resumes from when it runs with no wait pending: a parked thread
// stands on its `syscall` instruction to make it again (a futex wait then sees the word as it
// is; a relative timeout starts over); one woken but not yet run holds its result in RAX.
// What snapshots and clones record.
x86::UserCpuState ResumableCpu(const GuestThread& thread);

// ResumableCpu for a VM made from this one (a snapshot, a clone): a thread whose pipe write
// has written part of its bytes (parked, restarted or about to make it again) stands past the
// syscall with that count in RAX, as Linux's write would return it; the copy's pipe is not
// this one (docs/design.md, "Pipes and waiting for fds").
x86::UserCpuState CapturedCpu(const GuestThread& thread);

}  // namespace flurry
