// Snapshots: descriptor + sparse memory image in a directory (restoring: vm_restore.cc).
//
// Directory layout (docs/formats/snapshot.md):
//   descriptor.fvd  the VM descriptor (docs/formats/descriptor.md)
//   memory.img      guest RAM as a sparse file of ram_size bytes: the pages the descriptor's
//                   page map lists are written at their guest-physical offsets, the rest are
//                   holes (zero).
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "arch/x86_64/layout.h"
#include "base/unique_fd.h"
#include "snapshot/descriptor_codec.h"
#include "snapshot/memory_image.h"
#include "snapshot/state_capture.h"
#include "vmm/vdso.h"
#include "vmm/vm.h"

namespace flurry {
namespace {

Result<void> WriteAllAt(int fd, const uint8_t* data, uint64_t length, uint64_t offset) {
  while (length > 0) {
    ssize_t n = pwrite(fd, data, length, static_cast<off_t>(offset));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return FailErrno("writing the memory image");
    data += n;
    offset += static_cast<uint64_t>(n);
    length -= static_cast<uint64_t>(n);
  }
  return {};
}

constexpr uint64_t kCopyChunk = 1 << 20;

// The process-PID directories of an earlier snapshot in `directory`: their two files and the
// directory itself (one holding anything else stays).
void RemoveProcessDirectories(const std::string& directory) {
  DIR* dir = opendir(directory.c_str());
  if (dir == nullptr) return;
  while (const dirent* entry = readdir(dir)) {
    const std::string name = entry->d_name;
    if (!name.starts_with("process-")) continue;
    const std::string path = directory + "/" + name;
    unlink((path + "/" + kSnapshotDescriptorFile).c_str());
    unlink((path + "/" + kSnapshotMemoryFile).c_str());
    rmdir(path.c_str());
  }
  closedir(dir);
}

}  // namespace

Result<VmDescriptor> Vm::CaptureDescriptor() {
  CloneState current = FLURRY_TRY_CTX(CaptureCurrentState(), "capturing the CPU");
  GuestMemory& memory = backend_->memory();
  FLURRY_TRY(memory.Materialize());  // the page map must see every page
  VmDescriptor descriptor = FLURRY_TRY_CTX(CaptureGuest(state_, memory), "capturing the guest");
  descriptor.vcpu = current.cpu;
  descriptor.backend = backend_->name();
  descriptor.clone = CloneIdentityRecord{fork_.family_id(), fork_.clone_id()};
  return descriptor;
}

Result<ControlReply> Vm::WriteSnapshot(const std::string& directory) {
  if (mkdir(directory.c_str(), 0755) != 0 && errno != EEXIST) {
    return FailErrno(fmt::format("creating snapshot directory {}", directory));
  }
  // A VM of several processes: every process stops at one instant, as for a clone; the others
  // run on at once, their copiers holding them as they were (vm_snapshot_processes.cc).
  if (processes_.Count() > 1) {
    if (!processes_.is_init()) {
      return FailErrno(EBUSY, "only the VM's first process can snapshot a VM of several processes");
    }
    FLURRY_TRY_CTX(GatherProcesses(), "stopping the VM's processes for the snapshot");
  }
  struct Ungather {  // the copiers end when their connections close
    std::optional<Gathering>& gathering;
    ~Ungather() { gathering.reset(); }
  } ungather{gathering_};
  VmDescriptor descriptor = FLURRY_TRY(CaptureDescriptor());
  if (!gathering_) return WriteSnapshotFiles(directory, descriptor);  // one process
  ProcessesRecord& record = descriptor.processes.emplace();
  record.processes = FLURRY_TRY_CTX(ProcessTable::RecordsOf(gathering_->table, &record.last_id),
                                    "recording the VM's processes");
  if (record.processes.size() < 2) {
    // The others ended (without zombies) before they were gathered: a VM of one process now,
    // whose pipes CaptureDescriptor took with their bytes (nobody else could read them).
    descriptor.processes.reset();
    return WriteSnapshotFiles(directory, descriptor);
  }
  // The pipes' bytes and the clock are the gathering instant's, when every process stood still.
  record.pipes = gathering_->pipes;
  for (PipeRecord& pipe : descriptor.files.pipes) pipe.contents.clear();
  descriptor.clock = gathering_->clock;
  // Init's descriptor is written last: until then the directory holds no snapshot that a
  // restore would take, nor another snapshot's processes.
  const std::string descriptor_path = directory + "/" + kSnapshotDescriptorFile;
  if (unlink(descriptor_path.c_str()) != 0 && errno != ENOENT) return FailErrno(descriptor_path);
  RemoveProcessDirectories(directory);
  const ControlReply others = FLURRY_TRY(WriteOtherProcesses(directory, *descriptor.clock));
  ControlReply reply = FLURRY_TRY(WriteSnapshotFiles(directory, descriptor));
  reply.descriptor_bytes += others.descriptor_bytes;
  reply.memory_bytes += others.memory_bytes;
  return reply;
}

Result<ControlReply> Vm::WriteSnapshotFiles(const std::string& directory,
                                            const VmDescriptor& descriptor) {
  FLURRY_TRY_CTX(ValidateDescriptor(descriptor), "checking the snapshot's descriptor");
  GuestMemory& memory = backend_->memory();
  // The descriptor is written last (atomically): while the memory image is being written, the
  // directory holds no descriptor, so a snapshot that fails part-way is refused by a restore.
  const std::string descriptor_path = directory + "/" + kSnapshotDescriptorFile;
  if (unlink(descriptor_path.c_str()) != 0 && errno != ENOENT) return FailErrno(descriptor_path);

  const std::string memory_path = directory + "/" + kSnapshotMemoryFile;
  UniqueFd image(open(memory_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644));
  if (!image.valid()) return FailErrno(memory_path);
  if (ftruncate(image.get(), static_cast<off_t>(memory.size())) != 0) {
    return FailErrno(memory_path);
  }
  uint64_t written = 0;
  std::vector<uint8_t> buffer;
  for (const auto& run : descriptor.pages.present) {
    const uint64_t offset = run.first_page * x86::kPageSize;
    const uint64_t length = run.page_count * x86::kPageSize;
    for (uint64_t done = 0; done < length;) {
      const uint64_t n = std::min(length - done, kCopyChunk);
      buffer.resize(n);
      FLURRY_TRY_CTX(memory.ReadPhysical(offset + done, buffer.data(), n), "reading guest memory");
      FLURRY_TRY_CTX(WriteAllAt(image.get(), buffer.data(), n, offset + done), memory_path);
      done += n;
    }
    written += length;
  }
  if (fsync(image.get()) != 0) return FailErrno(memory_path);
  FLURRY_TRY(WriteDescriptorFile(descriptor_path, descriptor));
  struct stat st {};
  stat(descriptor_path.c_str(), &st);
  ControlReply reply;
  reply.descriptor_bytes = static_cast<uint64_t>(st.st_size);
  reply.memory_bytes = written;
  return reply;
}

}  // namespace flurry
