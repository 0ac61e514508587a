// CloneRunner: runs one remote clone on this host for flurryd — `flurry restore
// tcp://PAGE_SERVER --as-clone ID ...` in a process group of its own — and pumps its stdout,
// stderr and outcome channel until it ends or the caller gives up on it. The VMM may be started
// before its clone is known (StartWaiting: `flurry clone-vmm`, which loads and makes its VM
// ahead) and given the clone later (Begin); Start does both at once.
//
// Thread: one at a time (the one that starts it, then a clone's thread); nothing shared but
// `Kill`, which any thread may call (it only signals the process group).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "fork/outcome_channel.h"
#include "memory/avoidance.h"

namespace flurry {

struct CloneRunSpec {
  std::string flurry_binary;    // the static `flurry` executable
  std::string page_server;      // IP:PORT
  std::string page_server_key;  // its key (32 hex digits): $FLURRY_PAGE_KEY of the clone
  uint64_t family_id = 0;
  int32_t clone_id = 0;
  std::string hostname;  // the guest's uname nodename
  std::string work_dir;  // the clone's own directory (its cwd)
  std::string root_dir;  // --dir: the guest's root when the parent had one (an empty directory
                         // of the clone's own, which it fills with the parent's files)
  std::string file_cache_dir;   // --file-cache: shared by the clones of one RunClones call
  uint32_t prefetch_pages = 0;  // 0: flurry's default
  Avoidance avoid;              // --avoid: the avoidance heuristics (all: no option)
  bool prefix_output = true;
  bool memory_stats = false;  // --stats: the clone's on-demand counters on stderr at its end
  std::string backend;        // --backend ("" = auto)
};

// The command line a spec runs (argv[0] included).
std::vector<std::string> CloneCommandLine(const CloneRunSpec& spec);

// A clone VMM before its clone: which program, made ready for which backend.
struct CloneVmmSpec {
  std::string flurry_binary;  // the static `flurry` executable
  std::string backend;        // --backend ("" = auto)
  uint64_t ram_bytes = 0;     // the guest memory it makes ahead (0: none)
  std::string work_dir = {};  // its cwd while it waits ("": this process's)
  bool idle = false;          // it waits at SCHED_IDLE, set as it starts (Begin ends that)
};

struct CloneRunResult {
  CloneOutcome outcome;    // SF_OUTCOME_LOST when the clone sent none
  std::string diagnostic;  // for LOST: why
};

class CloneRunner {
 public:
  // Starts a VMM that waits for its clone (Begin). It dies with the calling thread
  // (PR_SET_PDEATHSIG) and with its process group; unless begun, it exits when this runner
  // goes.
  static Result<CloneRunner> StartWaiting(const CloneVmmSpec& vmm);
  // Gives a waiting VMM its clone (the spec's binary and backend should be the VMM's: a
  // different backend runs without what was made ahead), at normal priority if it was started
  // at SCHED_IDLE. Fails when the VMM is gone; then the runner is of no more use.
  Result<void> Begin(const CloneRunSpec& spec);
  // StartWaiting, then Begin: the clone.
  static Result<CloneRunner> Start(const CloneRunSpec& spec);
  CloneRunner(CloneRunner&& other) noexcept;
  CloneRunner& operator=(CloneRunner&&) = delete;
  ~CloneRunner();  // kills the clone if it still runs

  pid_t pid() const { return pid_; }
  // Whether the VMM has ended (not reaped yet).
  bool Exited() const;

  // Pumps output to `on_output(stream, bytes)` until the clone has ended and its pipes are
  // drained. `keep_going()` is asked at least every 100 ms; false kills the clone (its result
  // is then LOST). `on_output` returning false does the same.
  CloneRunResult Wait(const std::function<bool(int stream, std::string_view data)>& on_output,
                      const std::function<bool()>& keep_going);

  // Kills the clone's whole process group (any thread).
  void Kill();

 private:
  CloneRunner() = default;
  // A VMM started at SCHED_IDLE (WarmVmms) goes to SCHED_OTHER.
  Result<void> LeaveIdlePriority();
  pid_t pid_ = 0;
  UniqueFd pidfd_;
  UniqueFd stdout_;
  UniqueFd stderr_;
  UniqueFd outcome_;
  UniqueFd request_;  // until Begin: the socket the VMM waits on
  bool reaped_ = false;
};

}  // namespace flurry
