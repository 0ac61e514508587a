#include "cluster_run.h"

#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>

#include "cluster/cluster_file.h"
#include "fork/remote_status.h"

namespace flurry {

Result<std::shared_ptr<const RemoteCloneConfig>> LoadRemoteCloneConfig(
    const std::string& cluster_file, const std::string& member, bool prefix_output,
    bool memory_stats, uint32_t prefetch_pages, const Avoidance& avoid, bool push_pages,
    uint64_t guest_memory) {
  const ClusterFile cluster = FLURRY_TRY(LoadClusterFile(cluster_file));
  if (cluster.hosts.empty()) return Fail("{}: the cluster has no hosts", cluster_file);
  FLURRY_TRY(ValidateMemberName(member));
  auto config = std::make_shared<RemoteCloneConfig>();
  std::error_code error;
  config->cluster_file = std::filesystem::absolute(cluster_file, error).string();
  config->member = member;
  config->prefix_output = prefix_output;
  config->memory_stats = memory_stats;
  config->prefetch_pages = prefetch_pages;
  config->avoid = avoid;
  config->push_pages = push_pages;
  config->ram_bytes = guest_memory;
  config->spare_standin = true;
  // flurry-remote: $FLURRY_REMOTE, else beside this executable.
  if (const char* env = std::getenv("FLURRY_REMOTE"); env != nullptr && *env != '\0') {
    config->remote_binary = env;
  } else {
    const auto self = std::filesystem::read_symlink("/proc/self/exe", error);
    if (error) return Fail("finding this executable: {}", error.message());
    config->remote_binary = (self.parent_path() / "flurry-remote").string();
  }
  if (access(config->remote_binary.c_str(), X_OK) != 0) {
    return FailErrno(fmt::format("{} (the stand-in for remote clones)", config->remote_binary));
  }
  // The allocator asks the daemons through flurry-remote (the VM's spare stand-in, or a
  // program started for the query): each GetStatus call has 2 s, and each wait for an answer
  // 5 s (RemoteCloneConfig's status_call_deadline and status_limit; docs/design.md,
  // Placement); a host that is down refuses at once, so only a host that vanished without a
  // trace costs the deadline. Each clone is taken to need the guest's RAM on its host
  // (docs/design.md, Placement).
  std::vector<ClusterFileAllocator::Host> hosts;
  for (const ClusterHost& host : cluster.hosts) hosts.push_back({host.name, host.slots});
  config->allocator = std::make_shared<ClusterFileAllocator>(
      std::move(hosts),
      std::make_unique<RemoteStatusSource>(config->remote_binary, config->cluster_file, member,
                                           config->status_call_deadline, config->status_limit),
      guest_memory);
  config->serve_bind = FLURRY_TRY_CTX(LocalAddressToward(cluster.hosts.front().address),
                                      "the address the cluster reaches this machine at");
  return std::shared_ptr<const RemoteCloneConfig>(std::move(config));
}

}  // namespace flurry
