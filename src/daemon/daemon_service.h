// The flurryd service (flurryd.proto, docs/protocols/flurryd.md): runs clones of VMs on other
// hosts on this host, one CloneRunner each, and streams their output and outcomes back.
//
// Threads: gRPC's handler threads call GetStatus/RunClone concurrently; `Shutdown` comes from
// flurryd's main thread. Shared state (the running clones) is guarded by mutex_.
#pragma once

#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

#include "daemon/clone_runner.h"
#include "flurryd.grpc.pb.h"

namespace flurry {

struct DaemonConfig {
  std::string name;           // this host's name in the cluster
  int32_t slots = 8;          // clones run at once, at most
  uint64_t memory_bytes = 0;  // 0: the host's MemTotal
  std::string state_dir;      // clones' working directories live in state_dir/clones
  std::string flurry_binary;  // the static flurry that runs a clone
  std::string backend;        // --backend for clones ("" = auto)
};

class DaemonService final : public flurry::daemon::v1::Flurryd::Service {
 public:
  explicit DaemonService(DaemonConfig config);

  grpc::Status GetStatus(grpc::ServerContext* context,
                         const flurry::daemon::v1::StatusRequest* request,
                         flurry::daemon::v1::HostStatus* reply) override;
  grpc::Status RunClone(grpc::ServerContext* context,
                        const flurry::daemon::v1::RunCloneRequest* request,
                        grpc::ServerWriter<flurry::daemon::v1::CloneEvent>* writer) override;

  // Ends every clone (their calls end with a LOST outcome) and refuses new ones.
  void Shutdown();
  int32_t running() const { return running_.load(); }

 private:
  DaemonConfig config_;
  std::atomic<bool> shutting_down_{false};
  std::atomic<int32_t> running_{0};
  std::atomic<uint64_t> next_run_{1};
};

}  // namespace flurry
