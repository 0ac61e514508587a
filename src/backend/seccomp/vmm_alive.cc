#include "backend/seccomp/vmm_alive.h"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <condition_variable>
#include <mutex>
#include <thread>

namespace flurry {
namespace {

// The sentinel's robust list: a head and one entry, in this process's private memory.
struct Sentinel {
  std::mutex mutex;
  std::condition_variable ready;
  robust_list_head head{};
  robust_list entry{};
  pid_t pid = 0;  // the process the sentinel thread runs in (0: none yet)
  pid_t tid = 0;
};

Sentinel& TheSentinel() {
  static Sentinel* sentinel = new Sentinel();  // never destroyed: the thread outlives main()
  return *sentinel;
}

// The thread: registers the list, then sleeps for the life of the process.
void SentinelMain(Sentinel* s) {
  pthread_setname_np(pthread_self(), "flurry-alive");
  {
    std::lock_guard lock(s->mutex);
    syscall(SYS_set_robust_list, &s->head, sizeof s->head);
    s->tid = static_cast<pid_t>(syscall(SYS_gettid));
    s->pid = getpid();
  }
  s->ready.notify_all();
  for (;;) pause();
}

}  // namespace

Result<void> PointVmmAliveWord(volatile uint32_t* word) {
  Sentinel& s = TheSentinel();
  std::unique_lock lock(s.mutex);
  if (s.pid != getpid()) {
    // None in this process yet (first use, or a fork() child: threads do not survive fork).
    s.pid = 0;
    s.head.list.next = &s.head.list;  // empty until a word is pointed at
    s.head.futex_offset = 0;
    s.head.list_op_pending = nullptr;
    try {
      std::thread(SentinelMain, &s).detach();
    } catch (const std::system_error& e) {
      return FailErrno(e.code().value(), "starting the VMM-alive sentinel thread");
    }
    s.ready.wait(lock, [&] { return s.pid == getpid(); });
  }
  // The kernel reads the list only when the sentinel thread exits: no race with it here.
  s.head.futex_offset = reinterpret_cast<intptr_t>(word) - reinterpret_cast<intptr_t>(&s.entry);
  s.entry.next = &s.head.list;
  s.head.list.next = &s.entry;
  *word = static_cast<uint32_t>(s.tid);
  return {};
}

void ForgetVmmAliveWord(volatile uint32_t* word) {
  Sentinel& s = TheSentinel();
  std::lock_guard lock(s.mutex);
  if (s.pid != getpid()) return;
  if (reinterpret_cast<intptr_t>(&s.entry) + s.head.futex_offset !=
      reinterpret_cast<intptr_t>(word)) {
    return;  // the list points at another word by now
  }
  s.head.list.next = &s.head.list;
  s.head.futex_offset = 0;
}

}  // namespace flurry
