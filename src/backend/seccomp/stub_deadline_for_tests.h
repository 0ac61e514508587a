// StubDeadline (tests only): kills a stub process that a test has not finished with within
// 20 s, so that a broken stub or a lane that never runs fails the test (the VMM's wait reports
// the death) instead of hanging it. A safety net, not a timing assertion.
#pragma once

#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>

#include "base/unique_fd.h"

namespace flurry {

class StubDeadline {
 public:
  explicit StubDeadline(pid_t pid) : pidfd_(static_cast<int>(syscall(SYS_pidfd_open, pid, 0))) {
    thread_ = std::thread([this] {
      std::unique_lock lock(mutex_);
      if (!cv_.wait_for(lock, std::chrono::seconds(20), [this] { return done_; })) {
        syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
      }
    });
  }
  ~StubDeadline() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  StubDeadline(const StubDeadline&) = delete;
  StubDeadline& operator=(const StubDeadline&) = delete;

 private:
  UniqueFd pidfd_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace flurry
