// RemoteStatusSource: the cluster allocator's HostStatusSource (fork/clone_allocator.h) on a
// real cluster. The static `flurry` has no gRPC, so it runs `flurry-remote status --machine`
// (apps/flurryd/flurry_remote_main.cc), which calls GetStatus on every host's flurryd at once
// over mutual TLS, each call with a deadline, and prints one line per host:
//
//   host NAME up SLOTS RUNNING_CLONES MEMORY_BYTES FREE_MEMORY_BYTES
//   host NAME down WHY...
//
// The VMM reads those lines with a hard limit of its own and kills the program past it, so a
// query never hangs the VM. docs/protocols/flurryd.md ("How the allocator asks").
//
// Thread: whoever calls Query (the vCPU thread, through the allocator); it keeps no state
// between calls.
//
// A cluster VM's spare stand-in (a `flurry-remote spare`, fork/remote_clones.h) answers the
// same query without a program to start: SpareStatusSource.
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "fork/clone_allocator.h"
#include "fork/remote_clones.h"

namespace flurry {

class RemoteStatusSource : public HostStatusSource {
 public:
  // `call_deadline`: each GetStatus call's (they run in parallel); `limit`: the whole query's,
  // the program's start included, after which it is killed and every host not yet reported is
  // down.
  RemoteStatusSource(std::string remote_binary, std::string cluster_file, std::string member,
                     std::chrono::milliseconds call_deadline, std::chrono::milliseconds limit);

  Result<std::vector<HostReport>> Query() override;

  // The command line Query runs (argv[0] included).
  std::vector<std::string> CommandLine() const;

 private:
  std::string remote_binary_, cluster_file_, member_;
  std::chrono::milliseconds call_deadline_, limit_;
};

// The same query answered by the VM's spare stand-in (SpareStandIn::Ask): no program starts,
// and the spare's channels to the hosts were made (and connecting) while it waited. Made for one
// request by the ForkController, which passes it to CloneAllocator::AllocateAsking. Query first
// waits for the spare to be ready (SpareStandIn::WaitUntilReady, up to the limit), then gives its
// answer the limit. It fails when the spare is not ready in time, cannot be asked or ends without a
// line (it is gone): the allocator then asks its own way. A spare that does not finish its answer
// within the limit keeps what it said by then, as a program would. Either way the spare is
// `stuck()`: of no more use (the ForkController drops it).
class SpareStatusSource : public HostStatusSource {
 public:
  SpareStatusSource(SpareStandIn& spare, const RemoteCloneConfig& config);
  Result<std::vector<HostReport>> Query() override;
  bool stuck() const { return stuck_; }

 private:
  SpareStandIn& spare_;
  std::vector<std::string> command_line_;
  std::chrono::milliseconds limit_;
  bool stuck_ = false;
};

// `flurry-remote status --machine` for that cluster file and member (argv[0] `remote_binary`).
std::vector<std::string> StatusCommandLine(const std::string& remote_binary,
                                           const std::string& cluster_file,
                                           const std::string& member,
                                           std::chrono::milliseconds call_deadline);

// `flurry-remote status --machine`'s lines. Lines that are not one of the two forms (or whose
// numbers do not parse) are skipped: that host counts as not having answered.
std::vector<HostReport> ParseStatusLines(std::string_view text);

}  // namespace flurry
