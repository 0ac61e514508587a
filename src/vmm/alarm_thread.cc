#include "vmm/alarm_thread.h"

#include <pthread.h>

#include <chrono>

namespace flurry {

void AlarmThread::Set(int64_t deadline_ns) {
  {
    std::lock_guard lock(mutex_);
    deadline_ns_ = deadline_ns;
    quit_ = false;  // only Stop() sets it, and joins before it returns
  }
  if (deadline_ns != 0 && !thread_.joinable()) {
    thread_ = std::thread([this] {
      pthread_setname_np(pthread_self(), "flurry-alarm");
      Loop();
    });
  }
  cv_.notify_all();
}

void AlarmThread::Stop() {
  if (!thread_.joinable()) return;
  {
    std::lock_guard lock(mutex_);
    quit_ = true;
  }
  cv_.notify_all();
  thread_.join();
}

void AlarmThread::Loop() {
  // std::chrono::steady_clock is CLOCK_MONOTONIC on Linux.
  using Clock = std::chrono::steady_clock;
  std::unique_lock lock(mutex_);
  while (!quit_) {
    if (deadline_ns_ == 0) {
      cv_.wait(lock);
      continue;
    }
    const Clock::time_point at{std::chrono::nanoseconds(deadline_ns_)};
    if (Clock::now() < at) {
      cv_.wait_until(lock, at);
      continue;  // woken: the deadline may have changed; or it is due now
    }
    deadline_ns_ = 0;
    lock.unlock();
    fire_();
    lock.lock();
  }
}

}  // namespace flurry
