// WarmVmms: clone VMMs flurryd starts before it has clones for them (CloneRunner::StartWaiting,
// `flurry clone-vmm`): each has loaded and made its VM, so a clone that takes one starts
// without waiting for that (docs/protocols/clone_vmm.md). A thread of its own ("flurryd-warm")
// keeps `count` of them ready, starting others once none has been taken for a while
// (kQuietBeforeMaking); they are started by, and die with, that thread. It also makes each one's
// working directory ahead (creating a directory is ~1 ms on ext4 when many were just removed, as
// clones' are).
//
// Threads: Take from any thread (clones' threads); the keeper thread starts VMMs. `ready_` and
// `stopping_` under `mutex_`.
#pragma once

#include <chrono>
#include <condition_variable>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include "daemon/clone_runner.h"

namespace flurry {

// A VMM waiting for its clone, and the directory made for that clone.
struct WaitingVmm {
  CloneRunner runner;
  std::string work_dir;    // empty, or made with an empty `root` inside: the clone's cwd
  uint64_t ram_bytes = 0;  // the guest memory it made ahead (0: none)
};

class WarmVmms {
 public:
  // How long no VMM is taken before others are made in place of those taken.
  static constexpr std::chrono::milliseconds kQuietBeforeMaking{250};

  // count 0: none (Take always returns nullopt). `work_dirs`: where each VMM's working
  // directory is made ("": none is).
  WarmVmms(CloneVmmSpec vmm, int count, std::string work_dirs = "");
  ~WarmVmms();  // Stop()
  WarmVmms(const WarmVmms&) = delete;
  WarmVmms& operator=(const WarmVmms&) = delete;

  // A waiting VMM, or nullopt when none is ready yet (the caller starts one itself).
  std::optional<WaitingVmm> Take();
  // The guest memory clones are expected to have (a RunClones request said so): VMMs are made
  // with that much memory ahead from now on, and those waiting with another size are replaced.
  void ExpectRam(uint64_t bytes);
  // Ends the keeper thread and the VMMs still waiting (the ones taken die with it too: they
  // were its children), and removes their directories. Idempotent.
  void Stop();
  // VMMs ready now (tests).
  int ready() const;

 private:
  void Keep();

  // A directory of its own for the next VMM ("" when it cannot be made).
  std::string MakeWorkDir();

  // The next VMM to start, and the directory made for it: outside the lock.
  Result<WaitingVmm> StartOne(uint64_t ram_bytes, bool idle);
  // Ends waiting VMMs (and removes their directories): outside the lock.
  static void End(std::list<WaitingVmm> vmms);

  const CloneVmmSpec vmm_;
  const int count_;
  const std::string work_dirs_;
  uint64_t made_ = 0;  // keeper thread only: VMMs made, names their directories
  mutable std::mutex mutex_;
  std::condition_variable changed_;
  std::list<WaitingVmm> ready_;
  uint64_t ram_bytes_ = 0;                           // ExpectRam's
  std::chrono::steady_clock::time_point last_take_;  // of the last VMM Take gave
  bool stopping_ = false;
  std::thread keeper_;
};

}  // namespace flurry
