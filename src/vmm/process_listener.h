// ProcessListener: wakes the VM's run thread when another guest process has sent this one a
// signal or one of its children has ended (guest/process_table.h), and ends this VMM when the
// VM's init has ended. While this process has children, it also wakes the run thread every
// second to look for child VMMs killed from outside (which could not report).
//
// Thread "flurry-procs", started by Start() and ended by Stop(), both called on the run
// thread; `kick` runs on the listener thread. A thread does not cross fork(): Stop() before
// it, Start() again after. The ProcessTable must outlive the listening (Stop() first).
#pragma once

#include <atomic>
#include <functional>
#include <thread>

#include "guest/process_table.h"

namespace flurry {

class ProcessListener {
 public:
  explicit ProcessListener(std::function<void()> kick) : kick_(std::move(kick)) {}
  ~ProcessListener() { Stop(); }
  ProcessListener(const ProcessListener&) = delete;
  ProcessListener& operator=(const ProcessListener&) = delete;

  // Listens for `table`'s process, unless already listening.
  void Start(ProcessTable& table);
  void Stop();
  // Whether a look at the children's VMMs is due (true once per kick that asked for one).
  // (A load first: the run thread asks at every stop, and a store there would be one too.)
  bool TakeChildrenCheck() {
    return children_check_.load(std::memory_order_relaxed) && children_check_.exchange(false);
  }

 private:
  void Loop(ProcessTable* table, std::atomic<uint32_t>* word);

  const std::function<void()> kick_;
  std::atomic<bool> quit_{false};
  std::atomic<bool> children_check_{false};  // set by the listener, taken by the run thread
  std::atomic<uint32_t>* word_ = nullptr;    // the run thread's
  std::thread thread_;                       // the run thread's
};

}  // namespace flurry
