// ForkController's part for clones on other hosts (a VM run with --cluster): slots from the
// cluster's allocator, the tickets' stand-ins and the spare that becomes one, and sf_clone's
// page server and stand-ins (docs/design.md, "Clones on other hosts").
#include <sys/socket.h>

#include <cstdio>

#include "fork/fork_controller.h"
#include "fork/remote_status.h"

namespace flurry {

std::vector<std::string> ForkController::AllocateRemote(int32_t asked) {
  CloneAllocator& allocator = *policy_.remote->allocator;
  if (!spare_) return allocator.Allocate(asked);
  // The spare answers the allocator's status query: no flurry-remote to start for it.
  SpareStatusSource through_spare(*spare_, *policy_.remote);
  std::vector<std::string> held = allocator.AllocateAsking(asked, through_spare);
  if (through_spare.stuck()) spare_.reset();  // the ticket starts its stand-in itself
  return held;
}

Result<std::vector<RemoteStandIn>> ForkController::StartStandIns(
    const std::vector<RemoteStandIn::HostShare>& shares) {
  if (spare_) {
    auto became = spare_->Become(*policy_.remote, shares, family_.family_id());
    spare_.reset();  // used up, or of no use (gone): a new one is made at sf_join
    if (became) return became;
  }
  return RemoteStandIn::Spawn(*policy_.remote, shares, family_.family_id());
}

void ForkController::KeepSpareStandIn() {
  if (spare_ || !policy_.remote || !policy_.remote->spare_standin) return;
  if (auto spare = SpareStandIn::Spawn(*policy_.remote); spare) spare_ = std::move(*spare);
  // else: the next ticket starts its stand-in itself (and says so if that fails too)
}

SyscallResult ForkController::CloneRemote(Ticket& ticket, const CloneState& state, ForkHost& host) {
  const RemoteCloneConfig& config = *policy_.remote;
  auto served = host.ServeForRemoteClones(state, config.serve_bind, config.push_pages);
  if (!served) {
    std::fprintf(stderr, "flurry: sf_clone: serving the clones' memory: %s\n",
                 served.error().message().c_str());
    return ErrnoFrom(served.error());
  }
  ticket.page_server = OwnedProcess(std::move(served->pidfd));
  return StartRemoteClones(ticket, served->address, served->key);
}

SyscallResult ForkController::StartRemoteClones(Ticket& ticket, const std::string& address,
                                                const std::string& key) {
  const int32_t first_id = family_.ReserveIds(ticket.granted);
  ticket.cloned = true;
  ticket.collected = true;  // no snapshot process to hear from
  ticket.first_id = first_id;
  // Each host's stand-in learns where the memory is and its clones' IDs.
  int32_t next_id = first_id;
  for (RemoteStandIn& standin : ticket.standins) {
    std::vector<int32_t> ids;
    for (int32_t i = 0; i < standin.count(); ++i) ids.push_back(next_id++);
    auto clones = standin.Start(address, key, ids);
    if (!clones) {
      // They are LOST: each gets a channel that reads EOF, so sf_join still reports them.
      std::fprintf(stderr, "flurry: %zu clone(s) on %s: %s\n", ids.size(), standin.host().c_str(),
                   clones.error().message().c_str());
      for (int32_t id : ids) {
        int pair[2];
        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) continue;
        close(pair[1]);
        ticket.children.push_back(Child{id, 0, UniqueFd(pair[0]), UniqueFd(), false});
      }
      continue;
    }
    for (SpawnedClone& c : *clones) {
      ticket.children.push_back(
          Child{c.id, c.pid, std::move(c.channel), std::move(c.pidfd), false});
    }
  }
  // The hosts count these clones as running from now on (flurryd's running_clones): the
  // allocator stops counting them as this VM's reservations, so that no clone counts twice.
  ticket.remote = RemoteReservation();
  // sf_join goes through the clones in ID order.
  std::sort(ticket.children.begin(), ticket.children.end(),
            [](const Child& a, const Child& b) { return a.id < b.id; });
  return SyscallResult::Return(0);
}

}  // namespace flurry
