#include "guest/thread_table.h"

#include <algorithm>
#include <cerrno>

namespace flurry {

GuestThread* ThreadTable::Find(int32_t tid) {
  return const_cast<GuestThread*>(static_cast<const ThreadTable*>(this)->Find(tid));
}

const GuestThread* ThreadTable::Find(int32_t tid) const {
  for (const GuestThread& thread : others) {
    if (thread.tid == tid) return &thread;
  }
  return nullptr;
}

void WakeThread(GuestThread& thread, int64_t result) {
  thread.wait = ThreadWait::kRunnable;
  thread.result = result;
  thread.woken_by_signal = false;
  thread.restart = false;
}

void RestartThread(GuestThread& thread) {
  WakeThread(thread, 0);
  thread.restart = true;
}

void InterruptThread(GuestThread& thread) {
  if (thread.block.partial) {  // a write that wrote part: that count, then the signal
    WakeThread(thread, static_cast<int64_t>(thread.block.partial->done));
    return;
  }
  WakeThread(thread, -EINTR);
  thread.woken_by_signal = true;
}

void Repark(GuestThread& thread) {
  thread.wait = thread.block.wait;
  thread.woken_by_signal = false;
}

x86::UserCpuState ResumableCpu(const GuestThread& thread) {
  x86::UserCpuState cpu = thread.cpu;
  if (thread.parked() || thread.restart) {
    cpu.regs.RewindSyscall(thread.syscall_nr);
  } else if (thread.in_syscall) {
    cpu.regs.rax = static_cast<uint64_t>(thread.result);
  }
  return cpu;
}

x86::UserCpuState CapturedCpu(const GuestThread& thread) {
  if ((thread.parked() || thread.restart) && thread.block.partial) {
    x86::UserCpuState cpu = thread.cpu;  // past the syscall
    cpu.regs.rax = thread.block.partial->done;
    return cpu;
  }
  if (thread.resumed && !thread.in_syscall) {  // standing on the syscall it was to make again
    x86::UserCpuState cpu = thread.cpu;
    cpu.regs.rip += 2;
    cpu.regs.rax = thread.resumed->done;
    return cpu;
  }
  return ResumableCpu(thread);
}

namespace {

// The threads waiting on the futex at `addr` whose bitset meets `bitset`, oldest first.
std::vector<GuestThread*> Waiters(std::vector<GuestThread>& threads, uint64_t addr,
                                  uint32_t bitset) {
  std::vector<GuestThread*> waiters;
  for (GuestThread& thread : threads) {
    if (thread.wait == ThreadWait::kFutex && thread.block.futex_addr == addr &&
        (thread.block.futex_bitset & bitset) != 0) {
      waiters.push_back(&thread);
    }
  }
  std::sort(waiters.begin(), waiters.end(),
            [](const GuestThread* a, const GuestThread* b) { return a->wait_seq < b->wait_seq; });
  return waiters;
}

}  // namespace

int ThreadTable::FutexWake(uint64_t addr, int count, uint32_t bitset) {
  int woken = 0;
  for (GuestThread* waiter : Waiters(others, addr, bitset)) {
    if (woken >= count) break;
    WakeThread(*waiter, 0);
    ++woken;
  }
  return woken;
}

int ThreadTable::FutexRequeue(uint64_t from, uint64_t to, int count) {
  int moved = 0;
  for (GuestThread* waiter : Waiters(others, from, ~0u)) {
    if (moved >= count) break;
    waiter->block.futex_addr = to;  // from == to: counted, as Linux counts them
    ++moved;
  }
  return moved;
}

int ThreadTable::WakeExpired(int64_t now_ns) {
  int woken = 0;
  for (GuestThread& thread : others) {
    if (thread.parked() && thread.block.deadline_ns != 0 && thread.block.deadline_ns <= now_ns) {
      if (thread.block.restart_at_deadline) {
        RestartThread(thread);
      } else {
        WakeThread(thread, thread.block.expiry_result);
      }
      ++woken;
    }
  }
  return woken;
}

int64_t ThreadTable::EarliestDeadline() const {
  int64_t earliest = 0;
  for (const GuestThread& thread : others) {
    const int64_t deadline = thread.parked() ? thread.block.deadline_ns : 0;
    if (deadline != 0 && (earliest == 0 || deadline < earliest)) earliest = deadline;
  }
  return earliest;
}

int ThreadTable::NextRunnable() const {
  for (size_t i = 0; i < others.size(); ++i) {
    if (!others[i].parked() && others[i].lane < 0) return static_cast<int>(i);
  }
  return -1;
}

bool ThreadTable::WaitsForFds() const {
  return std::any_of(others.begin(), others.end(),
                     [](const GuestThread& t) { return t.wait == ThreadWait::kFd; });
}

std::vector<pollfd> ThreadTable::FdWaitSet() const {
  std::vector<pollfd> set;
  for (const GuestThread& thread : others) {
    if (thread.wait != ThreadWait::kFd) continue;
    for (const pollfd& wanted : thread.block.poll_fds) {
      set.push_back(pollfd{.fd = wanted.fd, .events = wanted.events, .revents = 0});
    }
  }
  return set;
}

int ThreadTable::WakeReadyFds(std::span<const pollfd> polled) {
  int woken = 0;
  size_t at = 0;
  for (GuestThread& thread : others) {
    if (thread.wait != ThreadWait::kFd) continue;
    const size_t count = thread.block.poll_fds.size();
    if (at + count > polled.size()) break;  // not the set FdWaitSet made: leave the rest
    const std::span<const pollfd> mine = polled.subspan(at, count);
    at += count;
    if (std::any_of(mine.begin(), mine.end(), [](const pollfd& p) { return p.revents != 0; })) {
      RestartThread(thread);
      ++woken;
    }
  }
  return woken;
}

}  // namespace flurry
