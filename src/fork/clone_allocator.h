// CloneAllocator: decides where clones go when a VM runs with a cluster (flurry run --cluster):
// sf_request_ticket(n) asks it for n clone slots across the cluster's hosts and it grants m <= n
// (SnowFlock's EGO role). ClusterFileAllocator, the embedded default, spreads clones over the
// hosts of the cluster file by their free slots; a cluster manager (Slurm) can take its place
// behind the same interface.
//
// Thread: the VM's vCPU thread only (through ForkController).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace flurry {

class CloneAllocator {
 public:
  virtual ~CloneAllocator() = default;
  // Reserves slots for up to `requested` clones: the host of each granted clone, in clone
  // order (empty when none is free).
  virtual std::vector<std::string> Allocate(int32_t requested) = 0;
  // Gives back slots Allocate reserved.
  virtual void Release(const std::vector<std::string>& hosts) = 0;
};

// The cluster file's hosts and slots; counts only what this VM reserved (the daemons refuse a
// clone when their host is full, and that clone is reported LOST).
class ClusterFileAllocator : public CloneAllocator {
 public:
  struct Host {
    std::string name;
    int32_t slots = 0;
  };
  explicit ClusterFileAllocator(std::vector<Host> hosts);

  // Each clone goes to the host with the most free slots (the first such in file order), so a
  // ticket spreads evenly over hosts of equal size.
  std::vector<std::string> Allocate(int32_t requested) override;
  void Release(const std::vector<std::string>& hosts) override;

  int32_t free_slots(const std::string& host) const;

 private:
  std::vector<Host> hosts_;
  std::vector<int32_t> used_;
};

}  // namespace flurry
