// Snapshots: descriptor + sparse memory image in a directory (restoring: vm_restore.cc).
//
// Directory layout (docs/formats/snapshot.md):
//   descriptor.fvd  the VM descriptor (docs/formats/descriptor.md)
//   memory.img      guest RAM as a sparse file of ram_size bytes: the pages the descriptor's
//                   page map lists are written at their guest-physical offsets, the rest are
//                   holes (zero).
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
  GuestMemory& memory = backend_->memory();
  VmDescriptor descriptor = FLURRY_TRY(CaptureDescriptor());
  const std::string descriptor_path = directory + "/" + kSnapshotDescriptorFile;
  FLURRY_TRY(WriteDescriptorFile(descriptor_path, descriptor));

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
  struct stat st {};
  stat(descriptor_path.c_str(), &st);
  ControlReply reply;
  reply.descriptor_bytes = static_cast<uint64_t>(st.st_size);
  reply.memory_bytes = written;
  return reply;
}

}  // namespace flurry
