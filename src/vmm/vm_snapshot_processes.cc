// Snapshots of a VM of several processes (docs/formats/snapshot.md, "A VM of several
// processes"): init's VMM gathers the other processes as for a clone (vm_gather.cc) — each
// stops, forks a copier holding it as it was, and runs on — records the process table and the
// pipes' bytes in its own descriptor, and asks each copier to write its process into a
// subdirectory of the snapshot. Restoring: vm_restore_processes.cc.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>

#include "fork/vm_gathering.h"
#include "snapshot/memory_image.h"
#include "snapshot/state_capture.h"
#include "vmm/vm.h"

namespace flurry {
namespace {

// How long init waits for the other processes' copiers to write them, all together (their
// memory images can be GiBs; a copier that dies ends the wait at once).
constexpr std::chrono::minutes kWriteWithin{10};

}  // namespace

Result<ControlReply> Vm::WriteOtherProcesses(const std::string& directory,
                                             const ClockCapture& clock) {
  // Every copier writes at once; each says when it is done.
  for (const Gathering::Member& member : gathering_->members) {
    const std::string path = ProcessSnapshotDirectory(directory, member.pid);
    if (mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
      return FailErrno(fmt::format("creating {}", path));
    }
    const UniqueFd opened(open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!opened.valid()) return FailErrno(fmt::format("opening {}", path));
    GatherMessage write;
    write.type = GatherMessage::kWrite;
    write.pid = member.pid;
    write.clock_ns = clock.guest_monotonic_ns;
    write.realtime_ns = clock.host_realtime_ns;
    FLURRY_TRY_CTX(SendGatherMessage(member.copier.get(), write, {opened.get()}),
                   fmt::format("asking process {} for its snapshot", member.pid));
  }
  ControlReply reply;
  const auto deadline = std::chrono::steady_clock::now() + kWriteWithin;
  for (const Gathering::Member& member : gathering_->members) {
    const std::string context = fmt::format("writing process {}'s snapshot", member.pid);
    const auto left = std::max(std::chrono::milliseconds(0),
                               std::chrono::duration_cast<std::chrono::milliseconds>(
                                   deadline - std::chrono::steady_clock::now()));
    const GatherMessage done = FLURRY_TRY_CTX(
        ReceiveGatherMessage(member.copier.get(), GatherMessage::kWritten, left), context);
    if (done.clone_id != 0) return FailErrno(done.clone_id, context);
    struct stat st {};
    const std::string descriptor =
        ProcessSnapshotDirectory(directory, member.pid) + "/" + kSnapshotDescriptorFile;
    if (stat(descriptor.c_str(), &st) != 0) return FailErrno(descriptor);
    reply.descriptor_bytes += static_cast<uint64_t>(st.st_size);
    reply.memory_bytes += done.ids[0];
  }
  return reply;
}

Result<uint64_t> Vm::WriteCopySnapshot(const std::string& directory, const CloneState& state,
                                       const ClockCapture& clock) {
  // As a clone's descriptor (BecomeCloneVm): the files as they were at the gathering (this
  // copier has let go of the pipes since), with the page map of the copy's memory and the
  // VM's clock, one for all of its processes.
  GuestMemory& memory = backend_->memory();
  VmDescriptor descriptor = CaptureGuestStateExceptFiles(state_);
  descriptor.pages = FLURRY_TRY_CTX(CapturePageMap(memory), "capturing the page map");
  descriptor.vcpu = state.cpu;
  descriptor.files = state.files;
  descriptor.backend = backend_->name();
  descriptor.clone = CloneIdentityRecord{fork_.family_id(), fork_.clone_id()};
  descriptor.clock = clock;
  const ControlReply written = FLURRY_TRY(WriteSnapshotFiles(directory, descriptor));
  return written.memory_bytes;
}

}  // namespace flurry
