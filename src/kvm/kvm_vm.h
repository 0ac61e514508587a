// KvmVm: one KVM virtual machine (its fd) and its memory slots. Move-only. Created and
// configured by the Vm on the main thread before any vCPU runs.
#pragma once

#include <cstdint>

#include "base/error.h"
#include "base/unique_fd.h"
#include "kvm/kvm_system.h"

namespace flurry {

class KvmVcpu;

class KvmVm {
 public:
  static Result<KvmVm> Create(const KvmSystem& system);

  // Maps host memory [host, host+size) at guest physical address gpa in memory slot `slot`.
  Result<void> SetMemoryRegion(uint32_t slot, uint64_t gpa, uint64_t size, void* host);

  int fd() const { return fd_.get(); }

 private:
  explicit KvmVm(UniqueFd fd) : fd_(std::move(fd)) {}
  UniqueFd fd_;
};

}  // namespace flurry
