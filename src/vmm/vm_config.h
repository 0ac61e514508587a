// VmConfig: what `flurry run` asks for. Plain data.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "fork/remote_clones.h"
#include "memory/avoidance.h"

namespace flurry {

struct VmConfig {
  static constexpr uint64_t kDefaultMemory = 512ULL << 20;
  static constexpr uint64_t kStackSize = 8ULL << 20;

  std::string program;            // host path of the static ELF
  std::vector<std::string> argv;  // argv[0] included
  std::vector<std::string> envp;
  uint64_t memory_size = kDefaultMemory;
  std::optional<std::string> dir;  // host directory the guest sees as "/"
  bool dir_writable = false;
  std::chrono::milliseconds timeout{0};  // 0: none
  int max_clones_per_ticket = 64;        // sf_request_ticket's per-VM cap
  bool clone_output_prefix = true;       // clones' stdout/stderr lines start "[clone N] "
  BackendKind backend = BackendKind::kAuto;
  // Lanes the guest's threads run on in parallel (its CPUs); 0: as many as the host has CPUs.
  // At most what the backend offers (KVM: 1).
  int cpus = 0;
  // Restoring: guest memory is installed page by page as it is touched (memory/lazy_pages.h)
  // instead of copied in before the guest starts; a fault fetches up to prefetch_pages pages,
  // a sequential scan is read ahead up to readahead_pages (0: never), and the avoidance
  // heuristics in `avoid` keep pages off the source (memory/avoidance.h).
  bool memory_on_demand = false;
  uint32_t prefetch_pages = 8;
  uint32_t readahead_pages = 1024;
  Avoidance avoid;
  // A clone restored with memory on demand prints its counters to stderr when it ends.
  bool report_memory_stats = false;
  // Restoring as a clone of a VM on another host (flurryd starts it so): the descriptor's
  // resume state is the parent's at sf_clone; the clone returns `id` from sf_clone and sends
  // its outcome on `outcome_fd` (docs/protocols/clone_channel.md).
  struct CloneOf {
    uint64_t family_id = 0;
    int32_t id = 0;
    int outcome_fd = -1;
  };
  std::optional<CloneOf> clone_of;
  std::optional<std::string> hostname;  // the guest's uname nodename (default "flurry")
  // With clone_of: a directory the clones of one sf_clone on this host share, so that each of
  // the parent's files crosses the network once per host (guest/lazy_files.h).
  std::optional<std::string> file_cache_dir;
  // flurry run --cluster: sf_clone's clones run on the cluster's hosts (null: on this one).
  std::shared_ptr<const RemoteCloneConfig> remote_clones;
};

}  // namespace flurry
