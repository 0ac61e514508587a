// `flurry run --cluster FILE`: what a VM needs to put its clones on the cluster's hosts — the
// cluster-file allocator (asking the daemons through flurry-remote status; `guest_memory`, the
// guest's RAM size, is what it takes one clone to need on a host), the flurry-remote stand-in
// beside this executable, the credentials member, and the local address the hosts reach this
// machine at.
#pragma once

#include <memory>
#include <string>

#include "base/error.h"
#include "fork/remote_clones.h"
#include "memory/avoidance.h"

namespace flurry {

Result<std::shared_ptr<const RemoteCloneConfig>> LoadRemoteCloneConfig(
    const std::string& cluster_file, const std::string& member, bool prefix_output,
    bool memory_stats, uint32_t prefetch_pages, const Avoidance& avoid, bool push_pages,
    uint64_t guest_memory);

}  // namespace flurry
