#include "fork/fork_controller.h"

#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>

#include "flurry/sf_abi.h"
#include "fork/clone_directory.h"
#include "fork/snapshot_server.h"

namespace flurry {
namespace {

uint64_t MemAvailableBytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t value = 0;
  std::string unit;
  while (meminfo >> key >> value >> unit) {
    if (key == "MemAvailable:") return value * 1024;
  }
  return 0;
}

void KillChild(int pidfd) {
  if (pidfd >= 0) syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0);
}

}  // namespace

Result<ForkController> ForkController::Create(ForkPolicy policy) {
  CloneFamily family = FLURRY_TRY(CloneFamily::Create());
  // Clones whose snapshot process has exited are re-parented here; reap them automatically.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  signal(SIGCHLD, SIG_IGN);
  ForkController controller(policy, std::move(family));
  controller.KeepSpareStandIn();  // ready for the first ticket
  return controller;
}

ForkController::~ForkController() = default;

bool ForkController::IsHypercall(uint64_t nr) {
  return nr >= static_cast<uint64_t>(SF_HC_BASE) &&
         nr < static_cast<uint64_t>(SF_HC_BASE + SF_HC_COUNT);
}

bool ForkController::MakesClones(uint64_t nr) {
  switch (static_cast<long>(nr)) {
    case SF_HC_REQUEST_TICKET:
    case SF_HC_CLONE:
    case SF_HC_CHECKPOINT:
    case SF_HC_CREATE_CLONES:
      return true;
    default:
      return false;
  }
}

SyscallResult ForkController::Handle(SyscallContext& context, const SyscallArgs& args,
                                     ForkHost& host) {
  switch (static_cast<long>(args.nr)) {
    case SF_HC_REQUEST_TICKET:
      return RequestTicket(args);
    case SF_HC_TICKET_INFO:
      return TicketInfo(args);
    case SF_HC_CLONE:
      return Clone(context, args, host);
    case SF_HC_EXIT:
      return Exit(context, args);
    case SF_HC_JOIN:
      return Join(context, args);
    case SF_HC_KILL:
      return Kill(args);
    case SF_HC_CHECKPOINT:
      return Checkpoint(context, args, host);
    case SF_HC_CREATE_CLONES:
      return CreateClones(args);
    case SF_HC_ID:
      return SyscallResult::Return(clone_id_);
    case SF_HC_RELEASE_CHECKPOINT:
      return ReleaseCheckpoint(args);
    case SF_HC_RELEASE_TICKET:
      return ReleaseTicket(args);
    default:
      return SyscallResult::Errno(ENOSYS);
  }
}

int32_t ForkController::GrantFor(int32_t requested) const {
  int64_t granted = std::min<int64_t>(requested, policy_.max_clones_per_ticket);
  granted = std::min<int64_t>(granted, kMaxSpawnCount);
  const uint64_t by_memory = MemAvailableBytes() / policy_.clone_memory_estimate;
  granted = std::min<int64_t>(granted, static_cast<int64_t>(by_memory));
  return static_cast<int32_t>(std::max<int64_t>(granted, 0));
}

SyscallResult ForkController::RequestTicket(const SyscallArgs& args) {
  const int64_t n = static_cast<int32_t>(args.arg[0]);
  if (n <= 0) return SyscallResult::Errno(EINVAL);
  RemoteReservation remote;
  std::vector<RemoteStandIn> standins;
  int32_t granted = 0;
  if (policy_.remote) {
    // The allocator grants m <= n slots across the cluster's hosts; the ticket's stand-in (one
    // process for all its hosts) starts now, so that sf_clone does not wait for it.
    const int32_t asked = std::min<int32_t>(
        static_cast<int32_t>(n), std::min(policy_.max_clones_per_ticket, kMaxSpawnCount));
    std::vector<std::string> held = AllocateRemote(asked);
    std::map<std::string, int32_t> per_host;
    for (const std::string& host : held) ++per_host[host];
    std::vector<RemoteStandIn::HostShare> shares;
    held.clear();  // by host, as the stand-ins' clones get their IDs
    for (const auto& [host, count] : per_host) {
      shares.push_back({host, count});
      held.insert(held.end(), count, host);
    }
    auto spawned = shares.empty() ? Result<std::vector<RemoteStandIn>>() : StartStandIns(shares);
    if (spawned) {
      standins = std::move(*spawned);
    } else {
      std::fprintf(stderr, "flurry: sf_request_ticket: %s\n", spawned.error().message().c_str());
      policy_.remote->allocator->Release(held);
      held.clear();
    }
    granted = static_cast<int32_t>(held.size());
    remote = RemoteReservation(policy_.remote->allocator, std::move(held));
  } else {
    granted = GrantFor(static_cast<int32_t>(n));
  }
  if (granted == 0) return SyscallResult::Errno(EAGAIN);
  // Ticket numbers carry the issuing clone's ID, so a ticket is never valid in another VM.
  const int64_t id = (static_cast<int64_t>(clone_id_) << 32) | next_ticket_++;
  tickets_[id].granted = granted;
  tickets_[id].remote = std::move(remote);
  tickets_[id].standins = std::move(standins);
  return SyscallResult::Return(id);
}

SyscallResult ForkController::TicketInfo(const SyscallArgs& args) {
  auto it = tickets_.find(static_cast<int64_t>(args.arg[0]));
  if (it == tickets_.end()) return SyscallResult::Errno(EINVAL);
  return SyscallResult::Return(it->second.granted);
}

Result<std::pair<UniqueFd, pid_t>> ForkController::ForkSnapshot(ForkHost& host, int32_t first_id,
                                                                int32_t count, bool detached,
                                                                int32_t* clone_id) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return FailErrno("creating the snapshot control socket");
  }
  // The snapshot process holds the frozen guest image and dies with this VMM.
  auto forked = ForkWithHooks(host, /*tied_to_parent=*/true);
  if (!forked) {
    close(sv[0]);
    close(sv[1]);
    return FailErrno(forked.error().code(),
                     "forking the snapshot process: " + forked.error().message());
  }
  const pid_t pid = *forked;
  if (pid == 0) {
    close(sv[0]);
    // The snapshot process must not hold the owner's handles to other snapshot processes and
    // clones (they would never see their owner let go of them).
    ForgetInherited();
    // Only returns in a clone.
    CloneStart start = RunSnapshotServer(UniqueFd(sv[1]), first_id, count, detached, host);
    ResetForClone(start.id, std::move(start.channel));
    *clone_id = start.id;
    return std::pair{UniqueFd(), pid_t{0}};
  }
  close(sv[1]);
  *clone_id = 0;
  return std::pair{UniqueFd(sv[0]), pid};
}

void ForkController::ForgetInherited() {
  for (auto& [number, ticket] : tickets_) {
    ticket.remote.Forget();
    for (RemoteStandIn& standin : ticket.standins) standin.Forget();
    ticket.page_server.Forget();
    if (ticket.checkpoint) ticket.checkpoint->page_server.Forget();
  }
  tickets_.clear();  // closes the parent's handles without touching its clones
  for (auto& [number, checkpoint] : checkpoints_) checkpoint->page_server.Forget();
  checkpoints_.clear();
  if (spare_) spare_->Forget();
  spare_.reset();
}

void ForkController::ResetForClone(int32_t id, UniqueFd channel) {
  ForgetInherited();
  clone_id_ = id;
  channel_ = std::move(channel);
  next_ticket_ = 1;
  next_checkpoint_ = 1;
  exit_result_.clear();
}

Result<int32_t> ForkController::NestedIdBase(int32_t id) {
  // Clone k of remote clone `id` is id * 2^16 + k: two levels deep below the original VM.
  if (id <= 0 || id >= (1 << 15)) {
    return Fail("clone {} cannot have clones of its own on another host (IDs 1..32767 can)", id);
  }
  return (id << 16) + 1;
}

Result<void> ForkController::BecomeRemoteClone(uint64_t family_id, int32_t id, UniqueFd channel) {
  if (!channel.valid()) return Fail("a remote clone needs its outcome channel");
  auto first_nested = NestedIdBase(id);
  // Without an ID range of its own the clone still runs; it only cannot clone (EAGAIN).
  family_ = FLURRY_TRY(CloneFamily::Continue(family_id, first_nested ? *first_nested : 0));
  if (!first_nested) policy_.max_clones_per_ticket = 0;
  ResetForClone(id, std::move(channel));
  return {};
}

void ForkController::BecomeCloneOrDie(ForkHost& host, const CloneState& state, int32_t id) {
  if (auto r = host.BecomeClone(id, state); !r) {
    std::fprintf(stderr, "flurry: clone %d: %s\n", id, r.error().message().c_str());
    ReportOutcome(CloneOutcome{SF_OUTCOME_LOST, 0, 0, {}});
    _exit(1);
  }
}

SyscallResult ForkController::StartClone(ForkHost& host, CloneState state, int32_t id) {
  state.cpu.regs.rax = static_cast<uint64_t>(id);
  BecomeCloneOrDie(host, state, id);
  return SyscallResult::Return(id);
}

Result<ForkController::DetachedClones> ForkController::CloneFromOutside(ForkHost& host,
                                                                        int32_t count,
                                                                        int32_t* clone_id) {
  if (count < 1 || count > kMaxSpawnCount) return Fail("clone count must be 1..{}", kMaxSpawnCount);
  const int32_t granted = GrantFor(count);
  if (granted < count) return Fail("only {} clones can be granted now", granted);
  CloneState state = FLURRY_TRY(host.CaptureCurrentState());
  // A VM of several processes: all of them, at this instant (as for sf_clone).
  FLURRY_TRY(host.GatherOtherProcesses());
  const int32_t first_id = family_.ReserveIds(count);
  auto snapshot = ForkSnapshot(host, first_id, count, /*detached=*/true, clone_id);
  if (*clone_id == 0) host.ForgetGathered();
  if (!snapshot) return std::unexpected(snapshot.error());
  if (*clone_id != 0) {
    BecomeCloneOrDie(host, state, *clone_id);
    return DetachedClones{};
  }
  auto spawned = FLURRY_TRY(ReceiveSpawnReplies(snapshot->first.get(), count));
  DetachedClones result;
  for (const SpawnedClone& c : spawned) {
    result.ids.push_back(c.id);
    result.pids.push_back(c.pid);
  }
  return result;  // channels close here: the clones' outcomes go unread
}

SyscallResult ForkController::Clone(SyscallContext&, const SyscallArgs& args, ForkHost& host) {
  auto it = tickets_.find(static_cast<int64_t>(args.arg[0]));
  if (it == tickets_.end()) return SyscallResult::Errno(EINVAL);
  Ticket& ticket = it->second;
  if (ticket.cloned) return SyscallResult::Errno(EALREADY);
  auto state = host.CaptureResumeState();
  if (!state) {
    std::fprintf(stderr, "flurry: sf_clone: %s\n", state.error().message().c_str());
    // What the VMM cannot clone (ENOTSUP) says so; its own failures are EIO.
    return SyscallResult::Errno(state.error().code() == ENOTSUP ? ENOTSUP : EIO);
  }
  if (!ticket.remote.empty()) {
    // Cloning a VM of several processes onto other hosts is not done yet.
    if (host.HasOtherProcesses()) {
      std::fprintf(stderr,
                   "flurry: sf_clone: the guest has more than one process: clones of it on "
                   "other hosts are not done yet\n");
      return SyscallResult::Errno(EBUSY);
    }
    return CloneRemote(ticket, *state, host);
  }
  if (auto gathered = host.GatherOtherProcesses(); !gathered) {
    std::fprintf(stderr, "flurry: sf_clone: %s\n", gathered.error().message().c_str());
    return SyscallResult::Errno(gathered.error().code_or(EAGAIN));
  }
  const int32_t first_id = family_.ReserveIds(ticket.granted);
  int32_t clone_id = 0;
  auto snapshot = ForkSnapshot(host, first_id, ticket.granted, /*detached=*/false, &clone_id);
  if (clone_id == 0) host.ForgetGathered();
  if (!snapshot) return ErrnoFrom(snapshot.error());
  if (clone_id != 0) return StartClone(host, std::move(*state), clone_id);
  ticket.cloned = true;
  ticket.first_id = first_id;
  ticket.snapshot = std::move(snapshot->first);
  return SyscallResult::Return(0);
}

SyscallResult ForkController::Exit(SyscallContext& context, const SyscallArgs& args) {
  if (!is_clone()) return SyscallResult::Errno(EPERM);
  const uint64_t address = args.arg[1], length = args.arg[2];
  if (length > SF_MAX_RESULT) return SyscallResult::Errno(E2BIG);
  std::vector<uint8_t> result(length);
  if (length > 0) {
    if (auto r = context.memory.Read(address, result.data(), length); !r)
      return ErrnoFrom(r.error());
  }
  exit_result_ = std::move(result);
  return SyscallResult::Exit(static_cast<int>(args.arg[0] & 0xff));
}

void ForkController::AdoptSpawned(Ticket& ticket, std::vector<SpawnedClone> spawned) {
  for (SpawnedClone& c : spawned) {
    ticket.children.push_back(Child{c.id, c.pid, std::move(c.channel), std::move(c.pidfd), false});
  }
}

Result<void> ForkController::CollectChildren(Ticket& ticket) {
  if (!ticket.snapshot.valid() || ticket.collected) return {};
  ticket.collected = true;
  auto spawned = ReceiveSpawnReplies(ticket.snapshot.get(), ticket.granted);
  if (!spawned) return std::unexpected(spawned.error());
  AdoptSpawned(ticket, std::move(*spawned));
  if (static_cast<int32_t>(ticket.children.size()) < ticket.granted) {
    std::fprintf(stderr, "flurry: only %zu of %d clones could be started\n", ticket.children.size(),
                 ticket.granted);
  }
  return {};
}

SyscallResult ForkController::Join(SyscallContext& context, const SyscallArgs& args) {
  auto it = tickets_.find(static_cast<int64_t>(args.arg[0]));
  if (it == tickets_.end() || !it->second.cloned) return SyscallResult::Errno(EINVAL);
  Ticket& ticket = it->second;
  const uint64_t outcomes_address = args.arg[1];
  const int64_t max = static_cast<int32_t>(args.arg[2]);
  if (max < 0) return SyscallResult::Errno(EINVAL);
  if (max > 0 && !context.memory.CheckUser(outcomes_address, max * sizeof(sf_outcome))) {
    return SyscallResult::Errno(EFAULT);
  }
  if (auto r = CollectChildren(ticket); !r) {
    std::fprintf(stderr, "flurry: sf_join: %s\n", r.error().message().c_str());
  }
  // Wait for every child (in ID order; each writes only to its own channel, so none blocks
  // another for good).
  std::vector<CloneOutcome> outcomes;
  for (Child& child : ticket.children) {
    auto outcome = ReceiveOutcome(child.channel.get());
    // A control request kicks the run thread as often as it likes: serve it and wait on.
    while (!outcome && outcome.error().code() == EINTR) {
      if (!context.KeepWaiting()) return SyscallResult::Errno(EINTR);
      outcome = ReceiveOutcome(child.channel.get());
    }
    CloneOutcome o = outcome ? std::move(*outcome) : CloneOutcome{SF_OUTCOME_LOST, 0, 0, {}};
    if (child.killed && o.kind == SF_OUTCOME_LOST) o.kind = SF_OUTCOME_KILLED;
    outcomes.push_back(std::move(o));
  }
  const int32_t count = static_cast<int32_t>(ticket.children.size());
  std::vector<int32_t> ids;
  for (const Child& child : ticket.children) {
    ids.push_back(child.id);
    // A clone that was killed could not remove its private --dir view.
    CloneDirectory::RemoveLayers(family_.family_id(), child.id);
  }
  tickets_.erase(it);  // the ticket is released whatever happens below
  // The next ticket's stand-in starts now that these clones are done: started at sf_clone, its
  // start would compete with theirs for the CPU (measured: as much as it saves).
  KeepSpareStandIn();

  bool fault = false;
  for (int32_t i = 0; i < count && i < max; ++i) {
    const uint64_t slot = outcomes_address + i * sizeof(sf_outcome);
    auto in = context.memory.ReadObject<sf_outcome>(slot);
    if (!in) return SyscallResult::Errno(EFAULT);
    sf_outcome out = *in;
    out.id = ids[i];
    out.kind = outcomes[i].kind;
    out.status = outcomes[i].status;
    out.signal = outcomes[i].signal;
    out.result_length = outcomes[i].result.size();
    const uint64_t copy = std::min<uint64_t>(out.result_length, out.result_capacity);
    if (copy > 0 && !context.memory.Write(out.result, outcomes[i].result.data(), copy)) {
      fault = true;
    }
    if (!context.memory.WriteObject(slot, out)) fault = true;
  }
  return fault ? SyscallResult::Errno(EFAULT) : SyscallResult::Return(count);
}

SyscallResult ForkController::Kill(const SyscallArgs& args) {
  auto it = tickets_.find(static_cast<int64_t>(args.arg[0]));
  if (it == tickets_.end() || !it->second.cloned) return SyscallResult::Errno(EINVAL);
  Ticket& ticket = it->second;
  (void)CollectChildren(ticket);
  for (Child& child : ticket.children) {
    KillChild(child.pidfd.get());
    child.killed = true;
  }
  return SyscallResult::Return(0);
}

SyscallResult ForkController::Checkpoint(SyscallContext& context, const SyscallArgs& args,
                                         ForkHost& host) {
  const uint64_t out = args.arg[0];
  const int64_t id = (static_cast<int64_t>(clone_id_) << 32) | next_checkpoint_++;
  // Written before the snapshot, so clones see it too.
  if (auto r = context.memory.WriteObject<int64_t>(out, id); !r) return ErrnoFrom(r.error());
  auto state = host.CaptureResumeState();
  if (!state) {
    std::fprintf(stderr, "flurry: sf_checkpoint_parent: %s\n", state.error().message().c_str());
    // What the VMM cannot clone (ENOTSUP) says so; its own failures are EIO.
    return SyscallResult::Errno(state.error().code() == ENOTSUP ? ENOTSUP : EIO);
  }
  // A cluster VM's checkpoint is served to other hosts too (a page server holding the VM as it
  // is now, as sf_clone's), so that its clones can go there. Without one they run here (so do
  // those of a VM of several processes: only sf_clone's clones of one process go elsewhere).
  std::optional<ForkHost::ServedMemory> served;
  OwnedProcess page_server;  // killed if the checkpoint fails below
  if (policy_.remote && !host.HasOtherProcesses()) {
    auto serving =
        host.ServeForRemoteClones(*state, policy_.remote->serve_bind, policy_.remote->push_pages);
    if (serving) {
      served = std::move(*serving);
      page_server = OwnedProcess(std::move(served->pidfd));
    } else {
      std::fprintf(stderr, "flurry: sf_checkpoint_parent: its clones will run on this host: %s\n",
                   serving.error().message().c_str());
    }
  }
  // A VM of several processes: every process stops at this instant, each leaves a copier with
  // the snapshot process, which asks them for copies whenever clones are made from it.
  if (auto gathered = host.GatherOtherProcesses(); !gathered) {
    std::fprintf(stderr, "flurry: sf_checkpoint_parent: %s\n", gathered.error().message().c_str());
    return SyscallResult::Errno(gathered.error().code_or(EAGAIN));
  }
  int32_t clone_id = 0;
  auto snapshot = ForkSnapshot(host, 0, 0, /*detached=*/false, &clone_id);
  if (clone_id == 0) host.ForgetGathered();
  if (!snapshot) return ErrnoFrom(snapshot.error());
  if (clone_id != 0) {
    page_server.Forget();  // the parent's
    return StartClone(host, std::move(*state), clone_id);
  }
  auto record = std::make_shared<CheckpointRecord>();
  record->control = std::move(snapshot->first);
  record->pid = snapshot->second;
  if (served) {
    record->served_address = served->address;
    record->served_key = served->key;
    record->page_server = std::move(page_server);
  }
  checkpoints_[id] = std::move(record);
  return SyscallResult::Return(0);
}

SyscallResult ForkController::CreateClones(const SyscallArgs& args) {
  auto found = checkpoints_.find(static_cast<int64_t>(args.arg[0]));
  if (found == checkpoints_.end()) return SyscallResult::Errno(EINVAL);
  const std::shared_ptr<CheckpointRecord>& checkpoint = found->second;
  auto it = tickets_.find(static_cast<int64_t>(args.arg[1]));
  if (it == tickets_.end()) return SyscallResult::Errno(EINVAL);
  Ticket& ticket = it->second;
  if (ticket.cloned) return SyscallResult::Errno(EALREADY);
  // A cluster ticket's clones of a served checkpoint go to their hosts, as sf_clone's do (the
  // ticket is used from then on, whatever happens to them).
  if (!ticket.remote.empty() && checkpoint->page_server.valid()) {
    ticket.checkpoint = checkpoint;  // its clones need it until the ticket is released
    return StartRemoteClones(ticket, checkpoint->served_address, checkpoint->served_key);
  }
  // Otherwise they run on this host: a cluster ticket's slots and stand-ins go back first.
  ticket.standins.clear();
  ticket.remote = RemoteReservation();
  const int32_t first_id = family_.ReserveIds(ticket.granted);
  const int control = checkpoint->control.get();
  if (auto r = SendSpawnRequest(control, first_id, ticket.granted); !r) return ErrnoFrom(r.error());
  auto spawned = ReceiveSpawnReplies(control, ticket.granted);
  if (!spawned) return ErrnoFrom(spawned.error());
  ticket.cloned = true;
  ticket.first_id = first_id;
  ticket.checkpoint = checkpoint;  // its clones die with the snapshot process
  AdoptSpawned(ticket, std::move(*spawned));
  return SyscallResult::Return(0);
}

SyscallResult ForkController::ReleaseCheckpoint(const SyscallArgs& args) {
  auto found = checkpoints_.find(static_cast<int64_t>(args.arg[0]));
  if (found == checkpoints_.end()) return SyscallResult::Errno(EINVAL);
  // The snapshot process and page server end here unless a ticket of clones made from the
  // checkpoint still holds them (then when that ticket is joined).
  checkpoints_.erase(found);
  return SyscallResult::Return(0);
}

SyscallResult ForkController::ReleaseTicket(const SyscallArgs& args) {
  auto found = tickets_.find(static_cast<int64_t>(args.arg[0]));
  if (found == tickets_.end()) return SyscallResult::Errno(EINVAL);
  if (found->second.cloned) return SyscallResult::Errno(EALREADY);  // sf_join releases it
  // A cluster VM's ticket gives its slots back to the allocator, and its stand-in ends.
  tickets_.erase(found);
  KeepSpareStandIn();
  return SyscallResult::Return(0);
}

void ForkController::ReportOutcome(const CloneOutcome& outcome) {
  if (!channel_.valid()) return;
  (void)SendOutcome(channel_.get(), outcome);
  channel_.Reset();
}

bool ForkController::ParentGone() const {
  if (!channel_.valid()) return false;
  pollfd pfd{channel_.get(), POLLOUT, 0};
  return poll(&pfd, 1, 0) == 1 && (pfd.revents & (POLLHUP | POLLERR)) != 0;
}

void ForkController::KillOutstanding() {
  for (auto& [id, ticket] : tickets_) {
    if (!ticket.cloned) continue;
    (void)CollectChildren(ticket);
    for (Child& child : ticket.children) KillChild(child.pidfd.get());
  }
  tickets_.clear();
  checkpoints_.clear();  // closing the control sockets ends the snapshot processes
  spare_.reset();
}

}  // namespace flurry
