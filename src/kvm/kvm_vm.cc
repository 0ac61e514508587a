#include "kvm/kvm_vm.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>

namespace flurry {

Result<KvmVm> KvmVm::Create(const KvmSystem& system) {
  int fd = -1;
  do {
    fd = ioctl(system.fd(), KVM_CREATE_VM, 0);
  } while (fd < 0 && errno == EINTR);
  if (fd < 0) return FailErrno("KVM_CREATE_VM");
  return KvmVm(UniqueFd(fd));
}

Result<void> KvmVm::SetMemoryRegion(uint32_t slot, uint64_t gpa, uint64_t size, void* host) {
  kvm_userspace_memory_region region{};
  region.slot = slot;
  region.guest_phys_addr = gpa;
  region.memory_size = size;
  region.userspace_addr = reinterpret_cast<uint64_t>(host);
  if (ioctl(fd_.get(), KVM_SET_USER_MEMORY_REGION, &region) != 0) {
    return FailErrno(
        fmt::format("KVM_SET_USER_MEMORY_REGION slot {} ({:#x} bytes at {:#x})", slot, size, gpa));
  }
  return {};
}

}  // namespace flurry
