// Cloning a VM of several processes: every guest process runs in a VMM of its own, so a clone
// of the whole VM is a copy of each, made at one instant and connected again in the clone (its
// own process table, its own copies of the pipes between them). The protocol is in
// fork/vm_gathering.h; see docs/design.md, "Cloning a VM of several processes".
#include <fcntl.h>
#include <poll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <functional>
#include <map>

#include "fork/snapshot_server.h"
#include "fork/vm_gathering.h"
#include "snapshot/pipe_contents.h"
#include "vmm/vm.h"

namespace flurry {
namespace {

using std::chrono::milliseconds;
using std::chrono::seconds;

// How long the cloning process waits for every other process to stop, and a clone's processes
// for each other.
constexpr seconds kStopWithin{10};
constexpr seconds kPeersWithin{10};

// One end of each pipe the guest holds, by pipe id (host fds of `fds`).
Result<std::map<uint64_t, int>> PipeEndsOf(const FdTable& fds) {
  std::map<uint64_t, int> ends;
  for (const auto& entry : fds.entries()) {
    if (entry.file == nullptr || entry.file->kind != FileKind::kPipe) continue;
    const uint64_t id = FLURRY_TRY(HostPipeId(entry.file->host_fd()));
    ends.emplace(id, entry.file->host_fd());
  }
  return ends;
}

// Where a copier's copy starts: clone `id`, whose rendezvous `owner` made.
struct CopyStart {
  int32_t id = 0;
  int32_t owner = 0;
};

// Writes the copier's process into a snapshot directory with the VM's clock; returns the
// memory bytes written.
using WriteCopy = std::function<Result<uint64_t>(const std::string&, const ClockCapture&)>;

// A snapshot's kWrite: the process as the copier holds it goes into the directory sent.
void WriteForHub(int hub, const GatherMessage& request, const UniqueFd& directory,
                 const WriteCopy& write_copy) {
  const Result<uint64_t> written =
      write_copy(fmt::format("/proc/self/fd/{}", directory.get()),
                 ClockCapture{.guest_monotonic_ns = request.clock_ns,
                              .host_realtime_ns = request.realtime_ns});
  GatherMessage done;
  done.type = GatherMessage::kWritten;
  done.pid = request.pid;
  if (written) {
    done.ids[0] = *written;
  } else {
    done.clone_id = written.error().code() > 0 ? written.error().code() : EIO;
    const std::string line = fmt::format("flurry: process {}: writing its snapshot: {}\n",
                                         request.pid, written.error().message());
    (void)!::write(2, line.data(), line.size());
  }
  (void)SendGatherMessage(hub, done);  // a hub that is gone has given up the snapshot
}

// The copier: a fork of a process's VMM at the clone instant, holding its frozen guest. Lets
// its process run on once the hub says so, then forks a copy for each clone the hub's snapshot
// process asks for (or writes the process into a snapshot: kWrite), until that process goes.
// Returns only in a copy.
CopyStart RunCopier(UniqueFd hub, UniqueFd release, ForkHooks& hooks, const WriteCopy& write_copy) {
  signal(SIGCHLD, SIG_IGN);  // copies are auto-reaped
  prctl(PR_SET_NAME, "flurry-copier");
  hooks.ForgetGuestPipes();
  Result<GatherMessage> released =
      ReceiveGatherMessage(hub.get(), GatherMessage::kRelease, kStopWithin + kPeersWithin);
  (void)!write(release.get(), "r", 1);
  release.Reset();
  if (!released) {
    hooks.ReleaseGuest();
    _exit(0);
  }
  for (;;) {
    std::vector<UniqueFd> fds;
    Result<GatherMessage> spawn = ReceiveGatherMessageOf(
        hub.get(), {GatherMessage::kSpawn, GatherMessage::kWrite}, std::chrono::hours(1), &fds);
    if (!spawn && spawn.error().code() == ETIMEDOUT) continue;
    if (!spawn) {  // the snapshot process is gone (or broke the protocol): no more clones
      hooks.ReleaseGuest();
      _exit(0);
    }
    if (spawn->type == GatherMessage::kWrite) {
      WriteForHub(hub.get(), *spawn, fds[0], write_copy);
      continue;
    }
    const pid_t copier = getpid();
    // The copies die with the copier, as clones do with their snapshot process — except a
    // detached clone's (flurry ctl clone), whose snapshot process, and so the copier, ends
    // once the clones exist.
    const bool detached = spawn->count == GatherMessage::kSpawnDetached;
    Result<pid_t> forked = ForkWithHooks(hooks, /*tied_to_parent=*/!detached);
    if (!forked) continue;  // that clone waits for this copy in vain and is lost
    if (*forked == 0) {
      if (!detached) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != copier) _exit(1);  // it died before we asked
      }
      return CopyStart{spawn->clone_id, spawn->host_pid};
    }
  }
}

}  // namespace

Result<void> Vm::GatherOtherProcesses() {
  if (!HasOtherProcesses()) return {};
  if (const HostDir* root = state_.fds.root(); root != nullptr && root->writable()) {
    return FailErrno(EBUSY,
                     "cloning a VM of several processes with a writable --dir is not supported "
                     "yet");
  }
  return GatherProcesses();
}

Result<void> Vm::GatherProcesses() {
  if (!HasOtherProcesses()) return {};
  // One clone of the VM at a time: a process that clones while another does fails at once
  // (and can then join the other's gathering).
  if (!processes_.TryOwnGathering(getpid())) {
    return FailErrno(EAGAIN, "another process of the VM is cloning it");
  }
  struct Owned {
    ProcessTable& table;
    ~Owned() { table.ReleaseGathering(getpid()); }
  } owned{processes_};
  Gathering gathering;
  const ProcessTable::Gathering call = processes_.StartGathering(getpid());
  const UniqueFd listener = FLURRY_TRY_CTX(ListenAt(GatheringName(getpid(), call.number)),
                                           "gathering the VM's processes");
  std::map<uint64_t, int> pipe_ends = FLURRY_TRY(PipeEndsOf(state_.fds));
  std::vector<UniqueFd> received_ends;
  std::vector<int32_t> joined;
  const auto deadline = std::chrono::steady_clock::now() + kStopWithin;
  for (;;) {
    const std::vector<int32_t> running = processes_.OtherRunningPids();
    std::vector<int32_t> missing;
    for (int32_t pid : running) {
      if (std::find(joined.begin(), joined.end(), pid) == joined.end()) missing.push_back(pid);
    }
    if (missing.empty()) break;
    if (std::chrono::steady_clock::now() > deadline) {
      return FailErrno(EAGAIN, fmt::format("process {} of the VM did not stop for the clone "
                                           "within {} s",
                                           missing.front(), kStopWithin.count()));
    }
    processes_.AskToJoin(call, joined);
    Result<UniqueFd> member = AcceptWithin(listener.get(), milliseconds(20));
    if (!member) continue;
    std::vector<UniqueFd> ends;
    Result<GatherMessage> hello =
        ReceiveGatherMessage(member->get(), GatherMessage::kHello, kStopWithin, &ends);
    // (A process forked since `missing` was taken counts too.)
    const std::vector<int32_t> now_running = processes_.OtherRunningPids();
    if (!hello ||
        std::find(now_running.begin(), now_running.end(), hello->pid) == now_running.end() ||
        std::find(joined.begin(), joined.end(), hello->pid) != joined.end()) {
      continue;  // not one of the VM's processes waited for: let it go
    }
    joined.push_back(hello->pid);
    for (uint32_t i = 0; i < hello->count; ++i) {
      pipe_ends.emplace(hello->ids[i], ends[i].get());
      received_ends.push_back(std::move(ends[i]));
    }
    gathering.members.push_back(Gathering::Member{hello->pid, std::move(*member)});
  }
  // Every process of the VM stands still: this is the clone instant. The table and the pipes'
  // bytes are taken now, then the others run on.
  if (pipe_ends.size() > kMaxGatherPipes) {
    return FailErrno(EBUSY, fmt::format("the VM has {} pipes; a clone of a VM of several "
                                        "processes takes at most {}",
                                        pipe_ends.size(), kMaxGatherPipes));
  }
  gathering.table = processes_.Image();
  gathering.clock = CaptureClockNow(state_.monotonic_offset_ns);
  for (const auto& [id, fd] : pipe_ends) {
    gathering.pipes.push_back(FLURRY_TRY_CTX(CapturePipe(fd, id), "copying the VM's pipes"));
  }
  GatherMessage release;
  release.type = GatherMessage::kRelease;
  for (const Gathering::Member& member : gathering.members) {
    FLURRY_TRY_CTX(SendGatherMessage(member.copier.get(), release),
                   fmt::format("letting process {} run on", member.pid));
  }
  gathering_ = std::move(gathering);
  return {};
}

Result<void> Vm::BeforeSpawn(int32_t id, bool detached) {
  if (!gathering_) return {};
  gathering_->rendezvous = FLURRY_TRY(ListenAt(RendezvousName(getpid(), id)));
  GatherMessage spawn;
  spawn.type = GatherMessage::kSpawn;
  spawn.host_pid = getpid();
  spawn.clone_id = id;
  spawn.count = detached ? GatherMessage::kSpawnDetached : 0;
  for (const Gathering::Member& member : gathering_->members) {
    FLURRY_TRY_CTX(SendGatherMessage(member.copier.get(), spawn),
                   fmt::format("asking for process {}'s copy", member.pid));
  }
  return {};
}

void Vm::AfterSpawn() {
  if (gathering_) gathering_->rendezvous.Reset();
}

Result<bool> Vm::JoinGathering(const ProcessTable::Gathering& call) {
  // Every thread stops: the copies carry them all.
  FLURRY_TRY(GatherLanes());
  const CloneState state = FLURRY_TRY_CTX(CaptureCurrentState(), "stopping for a clone");
  Result<UniqueFd> hub = ConnectTo(GatheringName(call.hub_host_pid, call.number));
  if (!hub) return false;  // that clone has given up already
  const std::map<uint64_t, int> ends = FLURRY_TRY(PipeEndsOf(state_.fds));
  if (ends.size() > kMaxGatherPipes) return false;  // the hub refuses the clone: too many
  GatherMessage hello;
  hello.type = GatherMessage::kHello;
  hello.pid = state_.identity.pid;
  std::vector<int> fds;
  for (const auto& [id, fd] : ends) {
    hello.ids[hello.count++] = id;
    fds.push_back(fd);
  }
  FLURRY_TRY(SendGatherMessage(hub->get(), hello, fds));
  int release[2];
  if (pipe2(release, O_CLOEXEC) != 0) return FailErrno("pipe2");
  UniqueFd release_read(release[0]), release_write(release[1]);
  // The copier forks copies for the clones; it outlives this process if it must (the clones'
  // copies of it live as long as their clones).
  std::unique_lock control_lock(control_mutex_);  // as for a process's fork (ForkGuestProcess)
  Result<pid_t> copier = ForkWithHooks(*this, /*tied_to_parent=*/false);
  control_lock.unlock();
  if (copier && *copier == 0) {
    release_read.Reset();
    // The member's tickets, checkpoints and outcome channel stay the member's alone (their
    // snapshot processes must see the member let go of them).
    fork_.BecomeGuestProcess();
    const CopyStart start =
        RunCopier(std::move(*hub), std::move(release_write), *this,
                  [this, &state](const std::string& directory, const ClockCapture& clock) {
                    return WriteCopySnapshot(directory, state, clock);
                  });
    if (auto became = BecomeCloneCopy(start.id, start.owner, state); !became) {
      const std::string line = fmt::format("flurry: clone {}: process {}: {}\n", start.id,
                                           state_.identity.pid, became.error().message());
      (void)!::write(2, line.data(), line.size());
      _exit(1);
    }
    return true;
  }
  hub->Reset();
  release_write.Reset();
  FLURRY_TRY(StartProcesses());  // the fork stopped the listener
  if (!copier) return std::unexpected(copier.error());
  // Stopped until every process has: the copier hears when (or that the clone gave up).
  pollfd pfd{release_read.get(), POLLIN, 0};
  while (poll(&pfd, 1, static_cast<int>((kStopWithin + kPeersWithin).count() * 1000)) < 0 &&
         errno == EINTR) {
  }
  return false;
}

Result<PipeSet> Vm::AssembleClone() {
  Gathering gathering = std::move(*gathering_);
  gathering_.reset();
  struct Registered {
    int32_t pid = 0;
    int32_t host_pid = 0;
    UniqueFd connection;
  };
  std::vector<Registered> registered;
  const auto deadline = std::chrono::steady_clock::now() + kPeersWithin;
  while (registered.size() < gathering.members.size()) {
    const auto left =
        std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    UniqueFd copy = FLURRY_TRY_CTX(AcceptWithin(gathering.rendezvous.get(), left),
                                   fmt::format("waiting for the clone's other processes ({} of "
                                               "{} came)",
                                               registered.size(), gathering.members.size()));
    Result<GatherMessage> hello =
        ReceiveGatherMessage(copy.get(), GatherMessage::kRegister, kPeersWithin);
    if (!hello) continue;
    const bool member =
        std::any_of(gathering.members.begin(), gathering.members.end(),
                    [&](const Gathering::Member& m) { return m.pid == hello->pid; });
    const bool again = std::any_of(registered.begin(), registered.end(),
                                   [&](const Registered& r) { return r.pid == hello->pid; });
    // The copy's VMM is the process at the other end (the table names it, KillOthers kills it).
    Result<pid_t> peer = PeerPid(copy.get());
    if (!member || again || !peer || hello->host_pid != *peer) continue;
    registered.push_back(Registered{hello->pid, hello->host_pid, std::move(copy)});
  }
  gathering.rendezvous.Reset();
  std::vector<std::pair<int32_t, int32_t>> host_pids{{state_.identity.pid, getpid()}};
  for (const Registered& r : registered) host_pids.emplace_back(r.pid, r.host_pid);
  auto [table, memfd] =
      FLURRY_TRY_CTX(ProcessTable::FromImage(gathering.table, state_.identity.pid, host_pids),
                     "making the clone's process table");
  GatherMessage setup;
  std::vector<int> fds;
  // (The member copies end with this process.)
  PipeSet pipes = FLURRY_TRY_CTX(MakeSetup(memfd.get(), gathering.pipes, getpid(), &setup, &fds),
                                 "making the clone's pipes");
  for (const Registered& r : registered) {
    FLURRY_TRY_CTX(SendGatherMessage(r.connection.get(), setup, fds),
                   fmt::format("setting up process {} of the clone", r.pid));
  }
  processes_ = std::move(table);
  return pipes;
}

Result<PipeSet> Vm::MakeSetup(int table_memfd, const std::vector<PipeRecord>& records,
                              int32_t host_pid, GatherMessage* setup, std::vector<int>* fds) {
  if (records.size() > kMaxGatherPipes) {
    return Fail("{} pipes; a SETUP carries at most {}", records.size(), kMaxGatherPipes);
  }
  *setup = GatherMessage{};
  setup->type = GatherMessage::kSetup;
  setup->host_pid = host_pid;
  *fds = {table_memfd};
  PipeSet pipes;
  for (const PipeRecord& record : records) {
    PipeEnds ends = FLURRY_TRY(MakePipe(record, false));
    setup->ids[setup->count++] = record.id;
    fds->push_back(ends.read.get());
    fds->push_back(ends.write.get());
    pipes.emplace(record.id, std::move(ends));
  }
  return pipes;
}

Result<void> Vm::BecomeCloneCopy(int32_t id, int32_t owner, const CloneState& state) {
  const UniqueFd rendezvous = FLURRY_TRY(ConnectTo(RendezvousName(owner, id)));
  GatherMessage hello;
  hello.type = GatherMessage::kRegister;
  hello.pid = state_.identity.pid;
  hello.host_pid = getpid();
  FLURRY_TRY(SendGatherMessage(rendezvous.get(), hello));
  std::vector<UniqueFd> fds;
  const GatherMessage setup = FLURRY_TRY_CTX(
      ReceiveGatherMessage(rendezvous.get(), GatherMessage::kSetup, kPeersWithin, &fds),
      "joining the clone");
  processes_ = FLURRY_TRY(ProcessTable::Attach(fds[0].get(), state_.identity.pid));
  // The clone ends with its cloning copy: killed (sf_kill), this copy must not run on.
  FLURRY_TRY(processes_.EndWith(setup.host_pid));
  PipeSet pipes;
  for (uint32_t i = 0; i < setup.count; ++i) {
    pipes.emplace(setup.ids[i], PipeEnds{std::move(fds[1 + 2 * i]), std::move(fds[2 + 2 * i])});
  }
  fork_.BecomeCloneMember(id);
  clone_member_ = true;
  FLURRY_TRY(BecomeCloneVm(id, state, &pipes));
  // As a host-initiated clone: stopped in a blocking syscall, the handler gives up and the
  // copy makes the syscall again; stopped between instructions, the guest runs on.
  cpu_replaced_ = in_syscall_;
  return {};
}

}  // namespace flurry
