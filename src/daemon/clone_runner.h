// CloneRunner: runs one remote clone on this host for flurryd — `flurry restore
// tcp://PAGE_SERVER --as-clone ID ...` in a process group of its own — and pumps its stdout,
// stderr and outcome channel until it ends or the caller gives up on it.
//
// Thread: one per clone (a gRPC handler thread); nothing shared but `Kill`, which any thread may
// call (it only signals the process group).
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

struct CloneRunResult {
  CloneOutcome outcome;    // SF_OUTCOME_LOST when the clone sent none
  std::string diagnostic;  // for LOST: why
};

class CloneRunner {
 public:
  // Starts the clone. It dies with this process (PR_SET_PDEATHSIG) and with its process group.
  static Result<CloneRunner> Start(const CloneRunSpec& spec);
  CloneRunner(CloneRunner&& other) noexcept;
  CloneRunner& operator=(CloneRunner&&) = delete;
  ~CloneRunner();  // kills the clone if it still runs

  pid_t pid() const { return pid_; }

  // Pumps output to `on_output(stream, bytes)` until the clone has ended and its pipes are
  // drained. `keep_going()` is asked at least every 100 ms; false kills the clone (its result
  // is then LOST). `on_output` returning false does the same.
  CloneRunResult Wait(const std::function<bool(int stream, std::string_view data)>& on_output,
                      const std::function<bool()>& keep_going);

  // Kills the clone's whole process group (any thread).
  void Kill();

 private:
  CloneRunner() = default;
  pid_t pid_ = 0;
  UniqueFd pidfd_;
  UniqueFd stdout_;
  UniqueFd stderr_;
  UniqueFd outcome_;
  bool reaped_ = false;
};

}  // namespace flurry
