#include "vmm/process_listener.h"

#include <linux/futex.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <ctime>

namespace flurry {

void ProcessListener::Start(ProcessTable& table) {
  if (thread_.joinable() || !table.valid()) return;
  quit_.store(false);
  word_ = table.WakeWord();
  thread_ = std::thread([this, &table, word = word_] { Loop(&table, word); });
}

void ProcessListener::Stop() {
  if (!thread_.joinable()) return;
  quit_.store(true);
  // A bump as well as a wake: the thread may be just about to wait on the old value.
  word_->fetch_add(1);
  syscall(SYS_futex, word_, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
  thread_.join();
}

void ProcessListener::Loop(ProcessTable* table, std::atomic<uint32_t>* word) {
  pthread_setname_np(pthread_self(), "flurry-procs");
  // The run thread takes the kicks (SIGUSR1), never this one.
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, nullptr);
  // Anything that happened while no listener ran (around a fork) is noticed at once: the
  // first wait sees a changed word.
  uint32_t seen = word->load() - 1;
  while (!quit_.load()) {
    // Wake at least every second to notice an init that was killed (it could not tell anyone).
    const timespec second{1, 0};
    syscall(SYS_futex, word, FUTEX_WAIT, seen, &second, nullptr, 0);
    if (quit_.load()) break;
    if (table->ShuttingDown() || table->InitGone() || table->OwnerGone()) {
      // The VM is over: this process ends with it (its stub or KVM VM goes with the VMM).
      _exit(128 + SIGKILL);
    }
    if (const uint32_t now = word->load(); now != seen) {
      seen = now;
      table->NotifyEvent();
      kick_();
    } else if (table->HasRunningChildren()) {
      // A second without news: a child VMM may have been killed from outside.
      children_check_.store(true);
      kick_();
    }
  }
}

}  // namespace flurry
