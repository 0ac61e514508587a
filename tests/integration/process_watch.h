// Helpers for tests/integration/escape_test.cc: watching every process a flurry run leaves
// behind, and reading symbols of the seccomp backend's stub.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace flurry_test {

// Records, while it lives, every descendant of this test process (polling /proc every
// millisecond or so): the flurry VMM the harness starts, its stub, anything they fork. A
// process is identified by pid and start time, so a reused pid is never mistaken for it.
// Processes that already existed when it started are ignored. Runs of other test binaries
// (other process trees) are never seen.
class ProcessWatch {
 public:
  struct Seen {
    pid_t pid = 0;
    uint64_t start_time = 0;
    std::string comm;
  };

  ProcessWatch();
  ~ProcessWatch();
  ProcessWatch(const ProcessWatch&) = delete;
  ProcessWatch& operator=(const ProcessWatch&) = delete;

  // Stops watching; then the seen processes that still exist after `grace_ms` (zombies don't
  // count). They are SIGKILLed (they were started by this test), and described.
  std::vector<std::string> Leftovers(int grace_ms = 3000);
  // Everything seen so far (e.g. "was a flurry-stub process started at all?").
  std::vector<Seen> SeenSoFar();

 private:
  void Poll();

  std::atomic<bool> stop_{false};
  std::mutex mutex_;
  std::map<std::pair<pid_t, uint64_t>, Seen> seen_;
  std::set<std::pair<pid_t, uint64_t>> preexisting_;
  std::thread thread_;
};

// One process's /proc/PID/stat fields the watch needs; nullopt when it is gone.
struct ProcStat {
  char state = '?';
  pid_t ppid = 0;
  pid_t session = 0;
  uint64_t start_time = 0;
  std::string comm;
};
std::optional<ProcStat> ReadProcStat(pid_t pid);
// The processes below `root` (its children, theirs, ...), by pid.
std::map<pid_t, ProcStat> Descendants(pid_t root);
// How many of them are called `comm` and not zombies.
int LiveDescendantsNamed(pid_t root, const std::string& comm);
// The live processes anywhere on this machine in session `sid` (whoever their parent is now:
// an orphan has init, and keeps its session).
int LiveProcessesInSession(pid_t sid);

// The address of `name` in the symbol table of the ELF file `path` (0 when absent).
uint64_t ElfSymbol(const std::string& path, const std::string& name);
// The size of `name` (st_size), 0 when absent.
uint64_t ElfSymbolSize(const std::string& path, const std::string& name);

}  // namespace flurry_test
