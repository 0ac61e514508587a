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
#pragma once

#include <chrono>
#include <string>
#include <string_view>
#include <vector>

#include "fork/clone_allocator.h"

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

// `flurry-remote status --machine`'s lines. Lines that are not one of the two forms (or whose
// numbers do not parse) are skipped: that host counts as not having answered.
std::vector<HostReport> ParseStatusLines(std::string_view text);

}  // namespace flurry
