// Restoring a snapshot of a VM of several processes (docs/formats/snapshot.md, "A VM of
// several processes"). The `flurry restore` process becomes the VM's init; before it makes
// any backend it forks one VMM for each other running process (they share its clone family,
// as processes forked by the guest do). Each registers at init's rendezvous as the copies of
// a clone's processes do (vm_gather.cc), gets the VM's process table, pipes and clock
// (kSetup), restores its process from its directory and says so (kRestored); once init is
// restored and every process is, init lets them run (kRelease). A process that cannot be
// restored fails the whole restore: no VM runs with a process missing.
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <set>

#include "fork/vm_gathering.h"
#include "snapshot/descriptor_codec.h"
#include "snapshot/memory_image.h"
#include "snapshot/state_capture.h"
#include "vmm/vm.h"

namespace flurry {
namespace {

static_assert(ProcessesRecord::kMaxProcesses == ProcessTable::kMaxProcesses);

using std::chrono::milliseconds;

// How long init waits for the others to register.
constexpr std::chrono::seconds kPeersWithin{10};
// How long init waits for every other process to restore itself (each copies its memory
// image).
constexpr std::chrono::minutes kRestoreWithin{10};

// Another running process of the VM being restored, as init's VMM sees it.
struct RestoredMember {
  int32_t pid = 0;
  std::string directory;
  VmDescriptor descriptor;
  pid_t host_pid = 0;  // its VMM
  UniqueFd connection;
};

// The VMMs forked for the other processes, by pidfd (the clone family ignores SIGCHLD, so they
// are reaped as they end: their pids may not be theirs any more), killed unless the restore
// succeeded.
struct ForkedVmms {
  struct Vmm {
    int32_t pid = 0;  // the guest process it restores
    UniqueFd pidfd;
  };
  std::vector<Vmm> vmms;
  bool keep = false;
  ~ForkedVmms() {
    if (keep) return;
    for (const Vmm& vmm : vmms)
      syscall(SYS_pidfd_send_signal, vmm.pidfd.get(), SIGKILL, nullptr, 0);
    for (const Vmm& vmm : vmms) {
      pollfd pfd{vmm.pidfd.get(), POLLIN, 0};
      while (poll(&pfd, 1, 5000) < 0 && errno == EINTR) {
      }
      siginfo_t info{};
      waitid(P_PIDFD, static_cast<id_t>(vmm.pidfd.get()), &info, WEXITED | WNOHANG);
    }
  }
  // The guest pid of a process whose VMM has ended already (it failed before registering), or 0.
  int32_t Ended() const {
    for (const Vmm& vmm : vmms) {
      pollfd pfd{vmm.pidfd.get(), POLLIN, 0};
      if (poll(&pfd, 1, 0) > 0) return vmm.pid;
    }
    return 0;
  }
};

// The other running processes' descriptors, read and checked before anything runs; every pipe
// a process names must be one the VM's record has.
Result<std::vector<RestoredMember>> ReadMembers(const std::string& directory,
                                                const VmDescriptor& init) {
  const ProcessesRecord& record = *init.processes;
  std::vector<RestoredMember> members;
  for (const ProcessRecord& p : record.processes) {
    if (p.pid == init.identity.pid || p.zombie) continue;
    RestoredMember member;
    member.pid = p.pid;
    member.directory = ProcessSnapshotDirectory(directory, p.pid);
    const std::string path = member.directory + "/" + kSnapshotDescriptorFile;
    member.descriptor = FLURRY_TRY_CTX(ReadDescriptorFile(path), path);
    if (member.descriptor.identity.pid != p.pid || member.descriptor.processes) {
      return Fail("{} is not the descriptor of process {} of the VM", path, p.pid);
    }
    FLURRY_TRY_CTX(CheckCompatibleWithHost(member.descriptor, x86::CpuSignature::OfHost()), path);
    members.push_back(std::move(member));
  }
  std::set<uint64_t> pipes;
  for (const PipeRecord& pipe : record.pipes) pipes.insert(pipe.id);
  auto check_pipes = [&](const VmDescriptor& d) -> Result<void> {
    for (const FdRecord& fd : d.files.fds) {
      if (fd.kind == FileKind::kPipe && fd.pipe != 0 && !pipes.contains(fd.pipe)) {
        return Fail("process {}'s fd {} is an end of pipe {}, which the VM does not record",
                    d.identity.pid, fd.fd, fd.pipe);
      }
    }
    return {};
  };
  FLURRY_TRY(check_pipes(init));
  for (const RestoredMember& member : members) FLURRY_TRY(check_pipes(member.descriptor));
  return members;
}

// Init's VMM: accepts the other processes' registrations on `rendezvous` (each from the VMM
// forked for it).
Result<void> AcceptMembers(int rendezvous, std::vector<RestoredMember>& members,
                           const ForkedVmms& forked) {
  const auto deadline = std::chrono::steady_clock::now() + kPeersWithin;
  size_t registered = 0;
  while (registered < members.size()) {
    if (const int32_t ended = forked.Ended(); ended != 0) {
      return Fail("the VMM restoring process {} ended before it joined the VM", ended);
    }
    if (std::chrono::steady_clock::now() > deadline) {
      std::string missing;
      for (const RestoredMember& m : members) {
        if (!m.connection.valid())
          missing += fmt::format("{}{}", missing.empty() ? "" : ", ", m.pid);
      }
      return Fail("processes {} did not join the VM within {} s", missing, kPeersWithin.count());
    }
    Result<UniqueFd> connection = AcceptWithin(rendezvous, milliseconds(100));
    if (!connection) continue;
    Result<GatherMessage> hello =
        ReceiveGatherMessage(connection->get(), GatherMessage::kRegister, kPeersWithin);
    Result<pid_t> peer = PeerPid(connection->get());
    if (!hello || !peer || hello->host_pid != *peer) continue;
    auto member = std::find_if(members.begin(), members.end(), [&](const RestoredMember& m) {
      return m.pid == hello->pid && m.host_pid == hello->host_pid && !m.connection.valid();
    });
    if (member == members.end()) continue;  // not a VMM forked for this restore
    member->connection = std::move(*connection);
    ++registered;
  }
  return {};
}

ForkPolicy PolicyOf(const VmConfig& config) {
  ForkPolicy policy;
  policy.max_clones_per_ticket = config.max_clones_per_ticket;
  return policy;
}

}  // namespace

Result<std::unique_ptr<Vm>> Vm::RestoreProcesses(const std::string& directory,
                                                 const VmDescriptor& d, const VmConfig& config) {
  const ProcessesRecord& record = *d.processes;
  if (record.pipes.size() > kMaxGatherPipes) {
    return Fail("the VM has {} pipes; a VM of several processes is restored with at most {}",
                record.pipes.size(), kMaxGatherPipes);
  }
  std::vector<RestoredMember> members =
      FLURRY_TRY_CTX(ReadMembers(directory, d), "reading the VM's other processes");
  // The clone family (clone IDs, the output lock) is the VM's: made before the forks.
  ForkController fork = FLURRY_TRY(ForkController::Create(PolicyOf(config)));
  UniqueFd rendezvous =
      FLURRY_TRY_CTX(ListenAt(RendezvousName(getpid(), 0)), "restoring the VM's processes");
  const pid_t owner = getpid();
  ForkedVmms forked;
  for (RestoredMember& member : members) {
    const pid_t child = ::fork();
    if (child < 0) return FailErrno(fmt::format("forking a VMM for process {}", member.pid));
    if (child == 0) {
      rendezvous.Reset();
      RunRestoredProcess(member.directory, member.descriptor, config, owner, std::move(fork));
    }
    UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, child, 0)));
    if (!pidfd.valid()) {
      const auto error = FailErrno("pidfd_open of a forked VMM");
      kill(child, SIGKILL);  // just forked: nothing can have reaped it yet
      return error;
    }
    member.host_pid = child;
    forked.vmms.push_back(ForkedVmms::Vmm{member.pid, std::move(pidfd)});
  }
  FLURRY_TRY_CTX(AcceptMembers(rendezvous.get(), members, forked),
                 "waiting for the VM's other processes");
  rendezvous.Reset();

  // The VM's process table, pipes and clock, for every process.
  const std::vector<uint8_t> image =
      FLURRY_TRY(ProcessTable::ImageOf(record.processes, record.last_id));
  std::vector<std::pair<int32_t, int32_t>> host_pids{{d.identity.pid, getpid()}};
  for (const RestoredMember& member : members) host_pids.emplace_back(member.pid, member.host_pid);
  auto [table, memfd] = FLURRY_TRY_CTX(ProcessTable::FromImage(image, d.identity.pid, host_pids),
                                       "making the VM's process table");
  GatherMessage setup;
  std::vector<int> fds;
  PipeSet pipes = FLURRY_TRY_CTX(MakeSetup(memfd.get(), record.pipes, getpid(), &setup, &fds),
                                 "making the VM's pipes");
  setup.clock_ns = RestoredMonotonicOffset(d, ClockResume::kFromCapture);
  for (const RestoredMember& member : members) {
    FLURRY_TRY_CTX(SendGatherMessage(member.connection.get(), setup, fds),
                   fmt::format("setting up process {}", member.pid));
  }

  std::unique_ptr<PageSource> source =
      FLURRY_TRY(MemoryImageSource::Open(directory, d.memory.ram_size));
  std::unique_ptr<Vm> vm = FLURRY_TRY(RestoreFrom(
      d, std::move(source), config, nullptr, nullptr,
      SharedWithProcesses{
          .pipes = &pipes, .monotonic_offset_ns = setup.clock_ns, .fork = std::move(fork)}));
  vm->processes_ = std::move(table);
  const auto deadline = std::chrono::steady_clock::now() + kRestoreWithin;
  for (const RestoredMember& member : members) {
    const std::string context = fmt::format("restoring process {}", member.pid);
    const auto left = std::max(milliseconds(0), std::chrono::duration_cast<milliseconds>(
                                                    deadline - std::chrono::steady_clock::now()));
    const GatherMessage restored = FLURRY_TRY_CTX(
        ReceiveGatherMessage(member.connection.get(), GatherMessage::kRestored, left), context);
    if (restored.clone_id != 0) {
      return FailErrno(restored.clone_id, context + " (its VMM said why above)");
    }
  }
  GatherMessage release;
  release.type = GatherMessage::kRelease;
  for (const RestoredMember& member : members) {
    FLURRY_TRY_CTX(SendGatherMessage(member.connection.get(), release),
                   fmt::format("starting process {}", member.pid));
  }
  forked.keep = true;
  return vm;
}

void Vm::RunRestoredProcess(const std::string& directory, const VmDescriptor& d,
                            const VmConfig& config, pid_t owner, ForkController fork) {
  // Until init lets it run, it is part of init's restore: it ends with that process. (Later
  // too: a VM's processes end when its init's VMM does.)
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != owner) _exit(1);
  const int32_t pid = d.identity.pid;
  auto run = [&]() -> Result<void> {
    UniqueFd init = FLURRY_TRY(ConnectTo(RendezvousName(owner, 0)));
    GatherMessage hello;
    hello.type = GatherMessage::kRegister;
    hello.pid = pid;
    hello.host_pid = getpid();
    FLURRY_TRY(SendGatherMessage(init.get(), hello));
    std::vector<UniqueFd> fds;
    // Init hands the table out once every process has registered (within kPeersWithin).
    const GatherMessage setup = FLURRY_TRY_CTX(
        ReceiveGatherMessage(init.get(), GatherMessage::kSetup, 2 * kPeersWithin, &fds),
        "joining the VM");
    PipeSet pipes;
    for (uint32_t i = 0; i < setup.count; ++i) {
      pipes.emplace(setup.ids[i], PipeEnds{std::move(fds[1 + 2 * i]), std::move(fds[2 + 2 * i])});
    }
    ProcessTable table = FLURRY_TRY(ProcessTable::Attach(fds[0].get(), pid));
    Result<std::unique_ptr<Vm>> vm = [&]() -> Result<std::unique_ptr<Vm>> {
      std::unique_ptr<PageSource> source =
          FLURRY_TRY(MemoryImageSource::Open(directory, d.memory.ram_size));
      return RestoreFrom(
          d, std::move(source), config, nullptr, nullptr,
          SharedWithProcesses{
              .pipes = &pipes, .monotonic_offset_ns = setup.clock_ns, .fork = std::move(fork)});
    }();
    // The pipe ends the process holds are its fds' own copies now: the set goes, or every
    // pipe of the VM would have a writer in this VMM and never see end of file.
    pipes.clear();
    fds.clear();
    GatherMessage restored;
    restored.type = GatherMessage::kRestored;
    restored.pid = pid;
    restored.clone_id = vm ? 0 : (vm.error().code() > 0 ? vm.error().code() : EIO);
    FLURRY_TRY(SendGatherMessage(init.get(), restored));
    if (!vm) return std::unexpected(vm.error());
    Vm& process = **vm;
    process.processes_ = std::move(table);
    process.guest_child_ = true;
    process.fork_.BecomeGuestProcess();
    // As long as init restores itself and waits for the others: until it says so, or gives
    // up (end of file) or dies (PR_SET_PDEATHSIG).
    for (;;) {
      Result<GatherMessage> release =
          ReceiveGatherMessage(init.get(), GatherMessage::kRelease, std::chrono::hours(1));
      if (release) break;
      if (release.error().code() != ETIMEDOUT) {
        return std::unexpected(release.error().WithContext("waiting for the VM's init"));
      }
    }
    init.Reset();  // the guest's processes must not inherit it
    // A process's Run ends its VMM (EndGuestProcess): it returns only if it failed to start.
    (void)process.Run();
    return Fail("the process did not run");
  };
  const Result<void> ran = run();
  const std::string line =
      fmt::format("flurry: restoring process {}: {}\n", pid, ran ? "ended" : ran.error().message());
  (void)!::write(2, line.data(), line.size());
  _exit(1);
}

}  // namespace flurry
