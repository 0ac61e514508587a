#include "fork/clone_allocator.h"

namespace flurry {

ClusterFileAllocator::ClusterFileAllocator(std::vector<Host> hosts)
    : hosts_(std::move(hosts)), used_(hosts_.size(), 0) {}

std::vector<std::string> ClusterFileAllocator::Allocate(int32_t requested) {
  std::vector<std::string> granted;
  for (int32_t i = 0; i < requested; ++i) {
    size_t best = hosts_.size();
    int32_t best_free = 0;
    for (size_t h = 0; h < hosts_.size(); ++h) {
      const int32_t free = hosts_[h].slots - used_[h];
      if (free > best_free) {
        best = h;
        best_free = free;
      }
    }
    if (best == hosts_.size()) break;
    ++used_[best];
    granted.push_back(hosts_[best].name);
  }
  return granted;
}

void ClusterFileAllocator::Release(const std::vector<std::string>& hosts) {
  for (const std::string& name : hosts) {
    for (size_t h = 0; h < hosts_.size(); ++h) {
      if (hosts_[h].name == name && used_[h] > 0) {
        --used_[h];
        break;
      }
    }
  }
}

int32_t ClusterFileAllocator::free_slots(const std::string& host) const {
  for (size_t h = 0; h < hosts_.size(); ++h) {
    if (hosts_[h].name == host) return hosts_[h].slots - used_[h];
  }
  return 0;
}

}  // namespace flurry
