#include "fork/clone_allocator.h"

#include <algorithm>
#include <cstdio>

namespace flurry {

ClusterFileAllocator::ClusterFileAllocator(std::vector<Host> hosts,
                                           std::unique_ptr<HostStatusSource> status,
                                           uint64_t clone_memory_bytes)
    : hosts_(std::move(hosts)),
      status_(std::move(status)),
      clone_memory_bytes_(std::max<uint64_t>(clone_memory_bytes, 1)),
      reserved_(hosts_.size(), 0) {}

std::vector<int64_t> ClusterFileAllocator::Room(HostStatusSource* first) {
  std::vector<int64_t> room(hosts_.size(), 0);
  Result<std::vector<HostReport>> reports = Fail("not asked");
  if (first != nullptr) reports = first->Query();
  if (!reports) reports = status_->Query();
  if (!reports) {
    std::fprintf(stderr, "flurry: sf_request_ticket: asking the hosts how they are: %s\n",
                 reports.error().message().c_str());
    return room;
  }
  for (size_t h = 0; h < hosts_.size(); ++h) {
    // The first report under the host's name counts; what the daemon sends is only numbers
    // here, each clamped so that nothing it says can overflow or grant more than the file's
    // slots.
    const HostReport* report = nullptr;
    for (const HostReport& r : *reports) {
      if (r.name == hosts_[h].name) {
        report = &r;
        break;
      }
    }
    if (report == nullptr || !report->up) {
      const std::string why = report == nullptr ? "" : ": " + report->why_down;
      std::fprintf(stderr,
                   "flurry: sf_request_ticket: no clones on %s: its flurryd did not answer%s\n",
                   hosts_[h].name.c_str(), why.c_str());
      continue;
    }
    const int64_t slots = std::min<int64_t>(hosts_[h].slots, std::max<int32_t>(report->slots, 0));
    const int64_t running = std::max<int32_t>(report->running_clones, 0);
    const int64_t by_slots = slots - running - reserved_[h];
    // Reserved clones that have not started use no memory there yet: they count against it.
    const int64_t by_memory =
        static_cast<int64_t>(std::min<uint64_t>(report->free_memory_bytes / clone_memory_bytes_,
                                                uint64_t{1} << 31)) -
        reserved_[h];
    room[h] = std::max<int64_t>(std::min(by_slots, by_memory), 0);
  }
  return room;
}

std::vector<std::string> ClusterFileAllocator::Allocate(int32_t requested) {
  return Grant(requested, nullptr);
}

std::vector<std::string> ClusterFileAllocator::AllocateAsking(int32_t requested,
                                                              HostStatusSource& status) {
  return Grant(requested, &status);
}

std::vector<std::string> ClusterFileAllocator::Grant(int32_t requested, HostStatusSource* first) {
  std::vector<std::string> granted;
  if (requested <= 0 || hosts_.empty()) return granted;
  std::vector<int64_t> room = Room(first);
  for (int32_t i = 0; i < requested; ++i) {
    size_t best = hosts_.size();
    int64_t best_room = 0;
    for (size_t h = 0; h < hosts_.size(); ++h) {
      if (room[h] > best_room) {
        best = h;
        best_room = room[h];
      }
    }
    if (best == hosts_.size()) break;
    --room[best];
    ++reserved_[best];
    granted.push_back(hosts_[best].name);
  }
  return granted;
}

void ClusterFileAllocator::Release(const std::vector<std::string>& hosts) {
  for (const std::string& name : hosts) {
    for (size_t h = 0; h < hosts_.size(); ++h) {
      if (hosts_[h].name == name && reserved_[h] > 0) {
        --reserved_[h];
        break;
      }
    }
  }
}

int32_t ClusterFileAllocator::reserved(const std::string& host) const {
  for (size_t h = 0; h < hosts_.size(); ++h) {
    if (hosts_[h].name == host) return reserved_[h];
  }
  return 0;
}

}  // namespace flurry
