// The flurryd service (flurryd.proto, docs/protocols/flurryd.md): runs clones of VMs on other
// hosts on this host, one CloneRunner each, and streams their output and outcomes back.
//
// Threads: gRPC's handler threads call GetStatus/RunClones concurrently, and each RunClones
// runs a thread per clone; `Shutdown` comes from flurryd's main thread; WarmVmms keeps clone
// VMMs ready on a thread of its own. Shared state is atomics (slots in use, shutting down) and
// WarmVmms (its own lock); a call's stream is written under that call's own lock.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>

#include "daemon/clone_runner.h"
#include "daemon/warm_vmms.h"
#include "flurryd.grpc.pb.h"

namespace flurry {

struct DaemonConfig {
  std::string name;           // this host's name in the cluster
  int32_t slots = 8;          // clones run at once, at most
  uint64_t memory_bytes = 0;  // 0: the host's MemTotal
  std::string state_dir;      // clones' working directories live in state_dir/clones
  std::string flurry_binary;  // the static flurry that runs a clone
  std::string backend;        // --backend for clones ("" = auto)
  int32_t warm_vmms = 0;      // clone VMMs kept started ahead of their clones (WarmVmms)
};

class DaemonService final : public flurry::daemon::v1::Flurryd::Service {
 public:
  explicit DaemonService(DaemonConfig config);

  grpc::Status GetStatus(grpc::ServerContext* context,
                         const flurry::daemon::v1::StatusRequest* request,
                         flurry::daemon::v1::HostStatus* reply) override;
  // One thread per clone ("flurryd-clone") pumps it; events go out under one writer lock.
  grpc::Status RunClones(grpc::ServerContext* context,
                         const flurry::daemon::v1::RunClonesRequest* request,
                         grpc::ServerWriter<flurry::daemon::v1::CloneEvent>* writer) override;

  // Ends every clone (their calls end with a LOST outcome) and refuses new ones.
  void Shutdown();
  int32_t running() const { return running_.load(); }

 private:
  // The memory this host offers clones: --mem, else MemTotal.
  uint64_t OfferedMemory() const;
  // Takes up to `wanted` free slots; returns how many.
  int32_t TakeSlots(int32_t wanted);
  // Runs clone `id` to its end, sending its events through `send` (false: the call is gone).
  void RunOne(const flurry::daemon::v1::RunClonesRequest& request, int32_t id,
              const std::string& file_cache,
              const std::function<bool(const flurry::daemon::v1::CloneEvent&)>& send,
              const std::function<bool()>& call_alive);

  DaemonConfig config_;
  WarmVmms warm_;
  std::atomic<bool> shutting_down_{false};
  std::atomic<int32_t> running_{0};
  std::atomic<uint64_t> next_run_{1};
};

}  // namespace flurry
