#include "kvm/kvm_system.h"

#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>

#include <cstring>

namespace flurry {

Result<KvmSystem> KvmSystem::Open(const char* path) {
  UniqueFd fd(open(path, O_RDWR | O_CLOEXEC));
  if (!fd.valid()) {
    int err = errno;
    std::string hint;
    if (err == ENOENT) hint = " (is KVM available and the kvm module loaded?)";
    if (err == EACCES || err == EPERM) hint = " (run as root or join the kvm group)";
    return std::unexpected(
        Error(err, fmt::format("opening {}: {}{}", path, std::strerror(err), hint)));
  }
  int version = ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (version != KVM_API_VERSION) {
    return Fail("{}: unsupported KVM API version {} (need {})", path, version, KVM_API_VERSION);
  }
  for (auto [cap, name] : {std::pair{KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY"},
                           std::pair{KVM_CAP_SYNC_REGS, "KVM_CAP_SYNC_REGS"},
                           std::pair{KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT"}}) {
    if (ioctl(fd.get(), KVM_CHECK_EXTENSION, cap) <= 0) {
      return Fail("{}: KVM lacks {}", path, name);
    }
  }
  int mmap_size = ioctl(fd.get(), KVM_GET_VCPU_MMAP_SIZE, 0);
  if (mmap_size < static_cast<int>(sizeof(kvm_run))) {
    return FailErrno(fmt::format("{}: KVM_GET_VCPU_MMAP_SIZE", path));
  }
  return KvmSystem(std::move(fd), mmap_size);
}

int KvmSystem::CheckExtension(long capability) const {
  return ioctl(fd_.get(), KVM_CHECK_EXTENSION, capability);
}

}  // namespace flurry
