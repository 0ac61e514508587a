// CloneAllocator: decides where clones go when a VM runs with a cluster (flurry run --cluster):
// sf_request_ticket(n) asks it for n clone slots across the cluster's hosts and it grants m <= n
// (SnowFlock's EGO role). ClusterFileAllocator, the embedded default, asks each host's flurryd
// how it is now (GetStatus, through a HostStatusSource) and spreads clones over the hosts by
// their live free slots and free memory; a cluster manager (Slurm) can take its place behind
// the same interface. docs/design.md ("Clones on other hosts", Placement) says how it decides.
//
// Thread: the VM's vCPU thread only (through ForkController): Allocate and Release, and the
// status query Allocate makes, run there. Nothing here is shared with another thread.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"

namespace flurry {

class HostStatusSource;

class CloneAllocator {
 public:
  virtual ~CloneAllocator() = default;
  // Reserves slots for up to `requested` clones: the host of each granted clone, in clone
  // order (empty when none is free).
  virtual std::vector<std::string> Allocate(int32_t requested) = 0;
  // As Allocate, with `status` asked first how the hosts are (the VM's spare stand-in, whose
  // connections are made: SpareStatusSource); when it cannot ask, the allocator asks its own
  // way. An allocator that asks the hosts nothing ignores it.
  virtual std::vector<std::string> AllocateAsking(int32_t requested, HostStatusSource& status) {
    (void)status;
    return Allocate(requested);
  }
  // Gives back slots Allocate reserved: unused (the ticket went without clones), or taken up by
  // clones that have just been started on those hosts (each host counts them as running from
  // then on, so this VM stops counting them itself).
  virtual void Release(const std::vector<std::string>& hosts) = 0;
};

// What a host's daemon says about itself (flurryd.proto HostStatus), or why it said nothing.
struct HostReport {
  std::string name;
  bool up = false;
  std::string why_down;  // when !up: the daemon's or the connection's error
  int32_t slots = 0;
  int32_t running_clones = 0;
  uint64_t memory_bytes = 0;
  uint64_t free_memory_bytes = 0;
};

// Asks the cluster's daemons how they are (GetStatus on each).
class HostStatusSource {
 public:
  virtual ~HostStatusSource() = default;
  // Every host's report, asked at once and within a bounded time: a host that does not answer
  // in it is reported down (or left out, which means the same). Fails when it could not ask
  // at all (then no host counts as up).
  virtual Result<std::vector<HostReport>> Query() = 0;
};

// The cluster file's hosts, their daemons' live status and what this VM has reserved.
class ClusterFileAllocator : public CloneAllocator {
 public:
  struct Host {
    std::string name;
    int32_t slots = 0;  // the cluster file's: caps the host even when its daemon says more
  };
  // `clone_memory_bytes`: the memory one more clone of this VM is taken to need on a host
  // (cluster_run.cc passes the guest's RAM size: docs/design.md says why).
  ClusterFileAllocator(std::vector<Host> hosts, std::unique_ptr<HostStatusSource> status,
                       uint64_t clone_memory_bytes);

  // Asks the daemons, then gives each clone to the host with the most room (the first such in
  // file order), so a ticket spreads evenly over hosts of equal size. A host's room: its free
  // slots (slots - running_clones - what this VM reserved there and has not started) and the
  // clones its free memory holds (free_memory_bytes / clone_memory_bytes, less the same
  // reservations), whichever is less. A host that did not answer gets none.
  std::vector<std::string> Allocate(int32_t requested) override;
  std::vector<std::string> AllocateAsking(int32_t requested, HostStatusSource& status) override;
  void Release(const std::vector<std::string>& hosts) override;

  // Slots this VM holds on `host` whose clones have not started (0 for an unknown host).
  int32_t reserved(const std::string& host) const;

 private:
  // How many more clones each host (in file order) can take now, asking `first` (when not
  // null) and, if it cannot ask, the allocator's own source; writes why a host takes none
  // because it did not answer on stderr.
  std::vector<int64_t> Room(HostStatusSource* first);
  std::vector<std::string> Grant(int32_t requested, HostStatusSource* first);

  std::vector<Host> hosts_;
  std::unique_ptr<HostStatusSource> status_;
  uint64_t clone_memory_bytes_;
  std::vector<int32_t> reserved_;  // per host, in file order
};

}  // namespace flurry
