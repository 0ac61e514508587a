// KvmSystem: an open /dev/kvm. Owns the fd; move-only. Any thread.
#pragma once

#include "base/error.h"
#include "base/unique_fd.h"

namespace flurry {

class KvmSystem {
 public:
  // Opens /dev/kvm and checks the API version and the capabilities flurry needs.
  // Errors name /dev/kvm and what to do ("... is the kvm module loaded? are you in group kvm?").
  static Result<KvmSystem> Open(const char* path = "/dev/kvm");

  int fd() const { return fd_.get(); }
  int vcpu_mmap_size() const { return vcpu_mmap_size_; }
  int CheckExtension(long capability) const;

 private:
  KvmSystem(UniqueFd fd, int vcpu_mmap_size)
      : fd_(std::move(fd)), vcpu_mmap_size_(vcpu_mmap_size) {}
  UniqueFd fd_;
  int vcpu_mmap_size_ = 0;
};

}  // namespace flurry
