// ForkController: the VMM side of the SnowFlock guest API (sdk/include/flurry/sf.h) — tickets,
// sf_clone, checkpoints, joining and killing clones, and, inside a clone, reporting its end.
//
// Owner: the Vm; used only on its vCPU thread. One per VMM process: the original VM's, and a
// fresh one (inherited, then reset) in every clone.
//
// Clones on one host: at sf_clone the VMM captures the vCPU's resume state and fork()s a
// snapshot process (fork/snapshot_server.h) whose copy-on-write memory is the VM at that
// instant; the parent VM continues at once. The snapshot process forks the clones; each
// rebuilds a KVM VM around its copy of guest memory (ForkHost::BecomeClone) and reports its
// outcome over a socket when it ends. See docs/design.md ("VM fork").
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "arch/x86_64/user_cpu_state.h"
#include "base/error.h"
#include "base/unique_fd.h"
#include "fork/clone_family.h"
#include "fork/outcome_channel.h"
#include "fork/remote_clones.h"
#include "fork/snapshot_server.h"
#include "guest/syscall.h"
#include "snapshot/vm_descriptor.h"

namespace flurry {

// What a clone resumes with, captured in the parent at the moment of cloning: the vCPU and
// the guest's open files (their offsets must be the ones at sf_clone, not at clone start).
struct CloneState {
  x86::UserCpuState cpu;
  FilesRecord files;
};

// What the controller needs from the VM it serves.
class ForkHost : public ForkHooks {
 public:
  virtual ~ForkHost() = default;
  // The CPU state that resumes the guest right after the current syscall (RAX = 0).
  virtual Result<CloneState> CaptureResumeState() = 0;
  // The CPU state as it stands (the guest stopped between instructions, not in a syscall).
  virtual Result<CloneState> CaptureCurrentState() = 0;
  // In a process just forked from a snapshot: rebuild the VM as clone `id`, resuming with
  // `state` (whose RAX the caller has set).
  virtual Result<void> BecomeClone(int32_t id, const CloneState& state) = 0;
  // Clones on other hosts: forks a page server holding the VM as it stands, resuming with
  // `state`, listening on `bind` ("IP:PORT", port 0 for any). It serves until this process
  // and every peer are gone, or until it is killed. With `push_pages` it also pushes every page
  // it sends to the multicast group its peers join (net/page_push.h).
  struct ServedMemory {
    std::string address;  // where it listens
    std::string key;      // its key (32 hex digits): peers must present it
    pid_t pid = 0;
    UniqueFd pidfd;
  };
  virtual Result<ServedMemory> ServeForRemoteClones(const CloneState& state,
                                                    const std::string& bind, bool push_pages) {
    (void)state;
    (void)push_pages;
    return Fail("cannot serve {} for clones on other hosts", bind);
  }
  // A VM of several processes (docs/design.md, "Cloning a VM of several processes"): whether
  // it has processes besides this one.
  virtual bool HasOtherProcesses() const { return false; }
  // Stops every other process of the VM at one instant, has each fork a snapshot of itself,
  // and records what the clones' copies of them need; they run on when it returns. Then
  // ForkSnapshot: the snapshot process has the copies made (ForkHooks::BeforeSpawn), and
  // ForgetGathered() drops, in this process, what the snapshot process now holds.
  virtual Result<void> GatherOtherProcesses() { return {}; }
  virtual void ForgetGathered() {}
};

struct ForkPolicy {
  int32_t max_clones_per_ticket = 64;            // per-VM cap
  uint64_t clone_memory_estimate = 16ULL << 20;  // for the free-memory cap
  // With a cluster (flurry run --cluster): sf_clone's clones run on the cluster's hosts
  // (fork/remote_clones.h). Null: every clone on this host.
  std::shared_ptr<const RemoteCloneConfig> remote;
};

class ForkController {
 public:
  static Result<ForkController> Create(ForkPolicy policy);
  ForkController(ForkController&&) = default;
  ForkController& operator=(ForkController&&) = default;
  ~ForkController();

  static bool IsHypercall(uint64_t nr);
  SyscallResult Handle(SyscallContext& context, const SyscallArgs& args, ForkHost& host);

  int32_t clone_id() const { return clone_id_; }
  bool is_clone() const { return channel_.valid(); }

  // A VM restored on another host as clone `id` of family `family_id` (flurryd runs it): its
  // outcome goes to `channel`; its own clones take IDs from NestedIdBase(id) on, so that they
  // stay unique in the family without a family-wide counter. A clone whose ID has no such
  // range (32768 and up) runs, but its sf_request_ticket fails with EAGAIN.
  Result<void> BecomeRemoteClone(uint64_t family_id, int32_t id, UniqueFd channel);
  static Result<int32_t> NestedIdBase(int32_t id);

  // In a clone: sends the outcome to the parent's VMM. Best effort (the parent may be gone).
  void ReportOutcome(const CloneOutcome& outcome);
  // In a clone: whether the parent's VMM is gone (nobody will read the outcome).
  bool ParentGone() const;
  // At the end of a VM: kills every clone not yet joined.
  void KillOutstanding();

  // Host-initiated clone (`flurry ctl SOCKET clone N`): forks `count` clones of the VM as it
  // stands. In the parent returns their IDs and pids (they run detached: nobody joins them and
  // they outlive the parent); in a new clone returns with *clone_id set.
  struct DetachedClones {
    std::vector<int32_t> ids;
    std::vector<int32_t> pids;
  };
  Result<DetachedClones> CloneFromOutside(ForkHost& host, int32_t count, int32_t* clone_id);
  uint64_t family_id() const { return family_.family_id(); }
  pthread_mutex_t* output_lock() const { return family_.output_lock(); }

  // In a child process of the guest (a fork() of this VMM): the parent's tickets, checkpoints
  // and outcome channel are the parent's. The clone ID stays (sf_id).
  void BecomeGuestProcess() {
    ForgetInherited();
    channel_.Reset();
  }
  // In a process of clone `id` of a VM of several processes, other than the cloning process's
  // copy: clone `id` (sf_id), without tickets, checkpoints or an outcome channel of its own.
  void BecomeCloneMember(int32_t id) { ResetForClone(id, UniqueFd()); }
  // Whether hypercall `nr` makes clones of the VM (which must then be one process).
  static bool MakesClones(uint64_t nr);

  // In a clone: the result blob sf_exit_with handed over (empty otherwise).
  const std::vector<uint8_t>& exit_result() const { return exit_result_; }

 private:
  struct Child {
    int32_t id = 0;
    pid_t pid = 0;
    UniqueFd channel;
    UniqueFd pidfd;
    bool killed = false;
  };
  // A checkpoint's snapshot process (and page server): ended when the last of the checkpoint
  // handle and the tickets of its clones lets go of it.
  struct CheckpointRecord {
    UniqueFd control;  // the snapshot process's control socket
    pid_t pid = 0;
    // A cluster VM's checkpoint is also served to other hosts: its clones go there.
    std::string served_address, served_key;
    OwnedProcess page_server;
  };
  struct Ticket {
    int32_t granted = 0;
    bool cloned = false;
    int32_t first_id = 0;
    UniqueFd snapshot;       // sf_clone: the snapshot process's control socket; closing it
                             // (releasing the ticket) ends the snapshot process and any
                             // clone still alive
    bool collected = false;  // the snapshot's spawn replies have been read
    std::vector<Child> children;
    // Clones on other hosts: the slots they hold until they start (the hosts count them from
    // then on) and the page server of their memory (killed when the ticket goes).
    RemoteReservation remote;
    std::vector<RemoteStandIn> standins;  // one per host, started with the ticket
    OwnedProcess page_server;
    // sf_create_clones: the checkpoint its clones come from (they die with its snapshot
    // process and fault on its page server), kept until the ticket is released even when the
    // guest has released the checkpoint.
    std::shared_ptr<CheckpointRecord> checkpoint;
  };

  explicit ForkController(ForkPolicy policy, CloneFamily family)
      : policy_(policy), family_(std::move(family)) {}

  SyscallResult RequestTicket(const SyscallArgs& args);
  SyscallResult TicketInfo(const SyscallArgs& args);
  SyscallResult Clone(SyscallContext& context, const SyscallArgs& args, ForkHost& host);
  SyscallResult Exit(SyscallContext& context, const SyscallArgs& args);
  SyscallResult Join(SyscallContext& context, const SyscallArgs& args);
  SyscallResult Kill(const SyscallArgs& args);
  SyscallResult Checkpoint(SyscallContext& context, const SyscallArgs& args, ForkHost& host);
  SyscallResult CreateClones(const SyscallArgs& args);
  SyscallResult ReleaseCheckpoint(const SyscallArgs& args);
  SyscallResult ReleaseTicket(const SyscallArgs& args);
  // Slots for up to `asked` clones from the cluster's allocator, which asks the spare how the
  // hosts are when there is one (a spare that did not answer in time is dropped).
  std::vector<std::string> AllocateRemote(int32_t asked);
  // A ticket's stand-ins: the spare made into them, or (no spare, or it is gone) a new process.
  Result<std::vector<RemoteStandIn>> StartStandIns(
      const std::vector<RemoteStandIn::HostShare>& shares);
  void KeepSpareStandIn();

  // Forks a snapshot process. Returns the owner's control socket in the parent; in a clone
  // (which returns through here) fills *clone_id.
  Result<std::pair<UniqueFd, pid_t>> ForkSnapshot(ForkHost& host, int32_t first_id, int32_t count,
                                                  bool detached, int32_t* clone_id);
  // In a clone just returned from ForkSnapshot: rebuild the VM, resume with RAX = id.
  SyscallResult StartClone(ForkHost& host, CloneState state, int32_t id);
  // Rebuilds the VM in a new clone; ends the process if that fails.
  void BecomeCloneOrDie(ForkHost& host, const CloneState& state, int32_t id);
  // In a new clone: forget the parent's tickets and checkpoints (closing inherited handles),
  // become `id`.
  void ResetForClone(int32_t id, UniqueFd channel);
  // In a process forked from this VMM: drop the parent's tickets and checkpoints without
  // touching what they hold (clones, slots, page servers are the parent's).
  void ForgetInherited();
  // sf_clone of a ticket whose clones go to other hosts.
  SyscallResult CloneRemote(Ticket& ticket, const CloneState& state, ForkHost& host);
  // Starts the ticket's clones on their hosts from the page server at `address` with `key`.
  SyscallResult StartRemoteClones(Ticket& ticket, const std::string& address,
                                  const std::string& key);
  Result<void> CollectChildren(Ticket& ticket);
  void AdoptSpawned(Ticket& ticket, std::vector<SpawnedClone> spawned);
  int32_t GrantFor(int32_t requested) const;

  ForkPolicy policy_;
  CloneFamily family_;
  int32_t clone_id_ = 0;
  UniqueFd channel_;  // in a clone: write end of its outcome channel
  int64_t next_ticket_ = 1;
  int64_t next_checkpoint_ = 1;
  std::map<int64_t, Ticket> tickets_;
  // A cluster VM's stand-in for its next ticket, started ahead (RemoteCloneConfig::spare_standin):
  // made with the controller and again at sf_join and sf_release_ticket once used; forgotten
  // in a forked process.
  std::optional<SpareStandIn> spare_;
  std::map<int64_t, std::shared_ptr<CheckpointRecord>> checkpoints_;  // not yet released
  std::vector<uint8_t> exit_result_;
};

}  // namespace flurry
