// AlarmThread: calls `fire` when a deadline on the host's CLOCK_MONOTONIC passes. The VM uses
// it to kick its run thread when the guest's interval timer is due, so SIGALRM arrives while
// the guest computes (the run thread is then in KVM_RUN or waiting for the stub).
//
// Thread "flurry-alarm", started by the first Set() with a deadline. Set() and Stop() are
// called by one thread (the VM's run thread); `fire` runs on the alarm thread. A thread does
// not cross fork(): Stop() before it, Set() again after.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>

namespace flurry {

class AlarmThread {
 public:
  explicit AlarmThread(std::function<void()> fire) : fire_(std::move(fire)) {}
  ~AlarmThread() { Stop(); }
  AlarmThread(const AlarmThread&) = delete;
  AlarmThread& operator=(const AlarmThread&) = delete;

  // The deadline in host CLOCK_MONOTONIC ns (0: none). A deadline already past fires at once.
  void Set(int64_t deadline_ns);
  // Ends the thread (joins it). The next Set() starts a new one.
  void Stop();

 private:
  void Loop();

  const std::function<void()> fire_;
  std::mutex mutex_;
  std::condition_variable cv_;
  int64_t deadline_ns_ = 0;  // guarded by mutex_
  bool quit_ = false;        // guarded by mutex_
  std::thread thread_;       // the caller's
};

}  // namespace flurry
