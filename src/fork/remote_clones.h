// Clones on other hosts, as the parent VMM sees them (flurry run --cluster). At sf_clone the
// VMM forks a page server holding the VM at that instant (ForkHost::ServeForRemoteClones); for
// each host that gets clones it starts a local stand-in, `flurry-remote`, which asks that
// host's flurryd to run them (docs/protocols/flurryd.md), writes their output to the VM's
// stdout/stderr and each outcome to that clone's outcome channel, and ends with them. To the
// ForkController each clone is a local one: a pid (the stand-in's), a pidfd and an outcome
// channel; sf_join, sf_kill and the end of the VM need nothing else. Killing the stand-in
// cancels its call, and the daemon kills its clones.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "fork/clone_allocator.h"
#include "fork/snapshot_server.h"
#include "memory/avoidance.h"

namespace flurry {

struct RemoteCloneConfig {
  std::shared_ptr<CloneAllocator> allocator;
  std::string remote_binary;      // flurry-remote
  std::string cluster_file;       // passed to flurry-remote (hosts, addresses, credentials)
  std::string member = "client";  // the credentials flurry-remote presents
  std::string serve_bind;         // "IP:0": where the page server listens (reachable by the hosts)
  bool prefix_output = true;
  bool memory_stats = false;    // clones print their memory-on-demand counters when they end
  uint32_t prefetch_pages = 0;  // 0: flurry restore's default
  Avoidance avoid;              // the clones' avoidance heuristics (flurry restore --avoid)
  uint64_t ram_bytes = 0;       // the VM's guest memory: hosts make clone VMMs' memory ahead
  bool push_pages = true;       // the page server pushes pages to all clones (multicast)
  bool spare_standin = false;   // keep a SpareStandIn ready for the next ticket
  // The allocator's status query (fork/remote_status.h): each host's GetStatus call, and the
  // limit of each wait for it: a program's run (its start included), after which a host not
  // reported is down; or the spare stand-in's ready message, then its answer.
  std::chrono::milliseconds status_call_deadline{2000};
  std::chrono::milliseconds status_limit{5000};
};

// The slots a ticket holds; given back to the allocator when it goes.
class RemoteReservation {
 public:
  RemoteReservation() = default;
  RemoteReservation(std::shared_ptr<CloneAllocator> allocator, std::vector<std::string> hosts)
      : allocator_(std::move(allocator)), hosts_(std::move(hosts)) {}
  RemoteReservation(RemoteReservation&& other) noexcept
      : allocator_(std::move(other.allocator_)), hosts_(std::move(other.hosts_)) {
    other.hosts_.clear();
  }
  RemoteReservation& operator=(RemoteReservation&& other) noexcept {
    if (this != &other) {
      Reset();
      allocator_ = std::move(other.allocator_);
      hosts_ = std::move(other.hosts_);
      other.hosts_.clear();
    }
    return *this;
  }
  ~RemoteReservation() { Reset(); }

  const std::vector<std::string>& hosts() const { return hosts_; }
  bool empty() const { return hosts_.empty(); }
  // In a clone: forget the parent's reservation without giving it back.
  void Forget() { hosts_.clear(); }

 private:
  void Reset() {
    if (allocator_ && !hosts_.empty()) allocator_->Release(hosts_);
    hosts_.clear();
  }
  std::shared_ptr<CloneAllocator> allocator_;
  std::vector<std::string> hosts_;
};

// A process this VMM started and ends when it lets go of it (a ticket's page server): holds
// its pidfd and SIGKILLs it on destruction.
class OwnedProcess {
 public:
  OwnedProcess() = default;
  explicit OwnedProcess(UniqueFd pidfd) : pidfd_(std::move(pidfd)) {}
  OwnedProcess(OwnedProcess&&) noexcept = default;
  OwnedProcess& operator=(OwnedProcess&& other) noexcept {
    if (this != &other) {
      Kill();
      pidfd_ = std::move(other.pidfd_);
    }
    return *this;
  }
  ~OwnedProcess() { Kill(); }
  // In a forked process: the parent owns it; close the handle, leave the process.
  void Forget() { pidfd_.Reset(); }
  bool valid() const { return pidfd_.valid(); }

 private:
  void Kill();
  UniqueFd pidfd_;
};

// The local stand-in of the clones a ticket puts on one host, started at sf_request_ticket so
// that its start (dynamic linking, connecting, the TLS handshake) is paid before sf_clone. It
// waits on its control pipe for the clone instant's page server, key and clone IDs (Start),
// then runs the clones; closing the pipe before that ends it. One flurry-remote process serves
// all the hosts of a ticket (a thread each): each host has a RemoteStandIn of its own here,
// with its control pipe and channels, and all of them the same process.
class RemoteStandIn {
 public:
  struct HostShare {
    std::string host;
    int32_t count = 0;
  };
  // Starts one flurry-remote process for the clones of `shares` (posix_spawn: no copy of the
  // VMM's page tables) and returns a stand-in per share, in order. The process's descriptors
  // from 3 on are, share after share, that share's control pipe then one outcome channel per
  // clone.
  static Result<std::vector<RemoteStandIn>> Spawn(const RemoteCloneConfig& config,
                                                  const std::vector<HostShare>& shares,
                                                  uint64_t family_id);
  RemoteStandIn(RemoteStandIn&&) noexcept = default;
  RemoteStandIn& operator=(RemoteStandIn&&) noexcept = default;
  // One that was never started (its ticket released first) kills the process (and so the
  // ticket's other hosts' clones: a ticket's stand-ins end together).
  ~RemoteStandIn();
  // In a process forked from the VMM: close the handles, leave the stand-in to the parent.
  void Forget();

  const std::string& host() const { return host_; }
  int32_t count() const { return static_cast<int32_t>(channels_.size()); }
  // At sf_clone: tells the stand-in where the memory is (the key travels in the pipe, never on a
  // command line) and which IDs its clones have; returns one SpawnedClone per ID (its outcome
  // channel, the stand-in's pid and a pidfd of it each). A stand-in that is gone already
  // yields clones whose channels read EOF (LOST).
  Result<std::vector<SpawnedClone>> Start(const std::string& page_server, const std::string& key,
                                          const std::vector<int32_t>& ids);

 private:
  friend class SpareStandIn;
  RemoteStandIn() = default;
  // A stand-in per share with its control pipe and channels made; the other ends go to
  // *theirs in the stand-in process's order (fd 3, 4, ...).
  static Result<std::vector<RemoteStandIn>> MakeEnds(const std::vector<HostShare>& shares,
                                                     std::vector<UniqueFd>* theirs);
  // Gives each a pidfd of the process `pid` (pidfd may be invalid: it has ended already).
  static Result<void> Adopt(std::vector<RemoteStandIn>& standins, pid_t pid, const UniqueFd& pidfd);
  std::string host_;
  pid_t pid_ = 0;
  UniqueFd pidfd_;
  UniqueFd control_;
  std::vector<UniqueFd> channels_;
};

// A flurry-remote started ahead of need (`flurry-remote spare`): it loads itself, the cluster
// file and the credentials and starts connecting to every host, says it is ready, then waits on
// a socket for the job of a ticket's stand-in (fork/standin_job.h). A ticket that gets it skips
// the start of a process (about 15 ms of sf_clone's path when the guest clones right after
// asking; docs/perf.md). Until then it answers the allocator's status queries (Ask;
// fork/remote_status.h, SpareStatusSource). Owned by the ForkController, touched by the VM's
// run thread only; killed when dropped unused.
class SpareStandIn {
 public:
  using HostShare = RemoteStandIn::HostShare;
  static Result<SpareStandIn> Spawn(const RemoteCloneConfig& config);
  SpareStandIn(SpareStandIn&&) noexcept = default;
  SpareStandIn& operator=(SpareStandIn&&) noexcept = default;
  ~SpareStandIn();
  // Makes the spare the stand-in of `shares`, as RemoteStandIn::Spawn starts one, once it is
  // ready (waiting up to config.status_limit). Fails if the spare is gone or not ready by then
  // (it is then of no use: drop it, and start the stand-in with Spawn).
  Result<std::vector<RemoteStandIn>> Become(const RemoteCloneConfig& config,
                                            const std::vector<HostShare>& shares,
                                            uint64_t family_id);
  // Hands the spare a job it answers and stays a spare for (a status query: `args` is a
  // `flurry-remote status` command line, `fds` its stdout). Fails if the spare is gone.
  Result<void> Ask(const std::vector<std::string>& args, const std::vector<int>& fds);
  // Waits until `until` for the spare to say it has loaded the cluster and made its channels
  // (at once when it has said so before). Fails if it has not by then, or is gone.
  Result<void> WaitUntilReady(std::chrono::steady_clock::time_point until);
  // In a process forked from the VMM: close the handles, leave the spare to the parent.
  void Forget();

 private:
  SpareStandIn() = default;
  pid_t pid_ = 0;
  UniqueFd pidfd_;
  UniqueFd socket_;
  bool ready_ = false;
};

// The command line of a stand-in (argv[0] included).
std::vector<std::string> RemoteStandInCommandLine(
    const RemoteCloneConfig& config, const std::vector<RemoteStandIn::HostShare>& shares,
    uint64_t family_id);

// The local address the hosts reach this machine at: the source address of a route to `peer`
// ("IP:PORT"), with port 0.
Result<std::string> LocalAddressToward(const std::string& peer);

}  // namespace flurry
