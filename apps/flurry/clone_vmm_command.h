// `flurry clone-vmm`: a clone VMM started before there is a clone for it (flurryd keeps some
// ready, docs/protocols/clone_vmm.md). It loads, makes what its backend can make ahead (on KVM
// the VM and its first vCPU), then waits on --request-fd for the `flurry restore` command line
// of its clone (fork/clone_vmm_request.h) and runs it as `flurry restore` would, named
// "flurry-clone" from then on (waiting, it is "flurry"). Not for people: flurryd starts it, and
// it is hidden from `flurry --help`.
#pragma once

#include <CLI/CLI.hpp>
#include <cstdint>
#include <string>

namespace flurry {

struct CloneVmmOptions {
  std::string backend;     // the backend to make ahead for ("" = auto)
  uint64_t ram_bytes = 0;  // the guest memory to make ahead (0: none)
  int request_fd = -1;
};

CLI::App* AddCloneVmmCommand(CLI::App& app, CloneVmmOptions& options);

// Returns the restored clone's exit status (as `flurry restore`); 0 when the request socket is
// closed without a request; 1 for a malformed request or one that is not a `restore`.
int CloneVmmCommand(const CloneVmmOptions& options);

}  // namespace flurry
