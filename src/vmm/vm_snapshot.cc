// Snapshots (descriptor + sparse memory image in a directory) and restoring them.
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
#include "snapshot/state_capture.h"
#include "vmm/vdso.h"
#include "vmm/vm.h"

namespace flurry {
namespace {

constexpr const char* kDescriptorFile = "descriptor.fvd";
constexpr const char* kMemoryFile = "memory.img";

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

Result<void> ReadAllAt(int fd, uint8_t* data, uint64_t length, uint64_t offset,
                       const std::string& path) {
  uint64_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd, data + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return FailErrno(fmt::format("{}: reading pages at {:#x}", path, offset));
    done += static_cast<uint64_t>(n);
  }
  return {};
}

constexpr uint64_t kCopyChunk = 1 << 20;

}  // namespace

Result<ControlReply> Vm::WriteSnapshot(const std::string& directory) {
  if (mkdir(directory.c_str(), 0755) != 0 && errno != EEXIST) {
    return FailErrno(fmt::format("creating snapshot directory {}", directory));
  }
  CloneState current = FLURRY_TRY_CTX(CaptureCurrentState(), "capturing the CPU");
  GuestMemory& memory = backend_->memory();
  VmDescriptor descriptor = FLURRY_TRY_CTX(CaptureGuest(state_, memory), "capturing the guest");
  descriptor.vcpu = current.cpu;
  descriptor.backend = backend_->name();
  descriptor.clone = CloneIdentityRecord{fork_.family_id(), fork_.clone_id()};
  const std::string descriptor_path = directory + "/" + kDescriptorFile;
  FLURRY_TRY(WriteDescriptorFile(descriptor_path, descriptor));

  const std::string memory_path = directory + "/" + kMemoryFile;
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

Result<std::unique_ptr<Vm>> Vm::Restore(const std::string& directory, const VmConfig& config) {
  const std::string descriptor_path = directory + "/" + kDescriptorFile;
  VmDescriptor d = FLURRY_TRY(ReadDescriptorFile(descriptor_path));
  FLURRY_TRY_CTX(CheckCompatibleWithHost(d, x86::CpuSignature::OfHost()), descriptor_path);
  const std::string memory_path = directory + "/" + kMemoryFile;
  UniqueFd image(open(memory_path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!image.valid()) return FailErrno(memory_path);
  struct stat st {};
  if (fstat(image.get(), &st) != 0) return FailErrno(memory_path);
  if (static_cast<uint64_t>(st.st_size) != d.memory.ram_size) {
    return Fail("{}: {} bytes, but the descriptor says guest memory is {} bytes", memory_path,
                st.st_size, d.memory.ram_size);
  }

  GuestLayout layout;
  layout.ram_size = d.memory.ram_size;
  layout.huge_start = x86::AlignUp(d.memory.image_end, x86::kHugePageSize);
  layout.huge_end = std::max(layout.huge_start, d.memory.mmap_top);
  layout.guard_start = d.memory.stack_bottom - x86::kHugePageSize;
  std::unique_ptr<Backend> backend = FLURRY_TRY(CreateBackend(config.backend, layout));
  GuestMemory& memory = backend->memory();
  FLURRY_TRY(InstallVdso(memory));
  std::vector<uint8_t> buffer;
  for (const auto& run : d.pages.present) {
    // Runs were validated in decoding; the system area below kUserBase is the backend's own.
    uint64_t offset = run.first_page * x86::kPageSize;
    const uint64_t end = offset + run.page_count * x86::kPageSize;
    offset = std::max(offset, x86::kUserBase);
    while (offset < end) {
      const uint64_t n = std::min(end - offset, kCopyChunk);
      buffer.resize(n);
      FLURRY_TRY(ReadAllAt(image.get(), buffer.data(), n, offset, memory_path));
      FLURRY_TRY_CTX(memory.WritePhysical(offset, buffer.data(), n), "restoring guest memory");
      offset += n;
    }
  }

  GuestState state = FLURRY_TRY(RestoreGuest(d));
  ForkPolicy policy;
  policy.max_clones_per_ticket = config.max_clones_per_ticket;
  ForkController fork = FLURRY_TRY(ForkController::Create(policy));
  FLURRY_TRY_CTX(backend->LoadCpu(d.vcpu), "restoring the CPU");
  auto vm = std::unique_ptr<Vm>(
      new Vm(std::move(backend), std::move(state), std::move(fork), config.clone_output_prefix));
  FLURRY_TRY_CTX(vm->StartClock(), "starting the guest clock");
  return vm;
}

}  // namespace flurry
