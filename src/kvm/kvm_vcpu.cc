#include "kvm/kvm_vcpu.h"

#include <sys/ioctl.h>
#include <sys/mman.h>

#include <cstring>
#include <memory>

#include "kvm/kvm_abi.h"

namespace flurry {

Result<KvmVcpu> KvmVcpu::Create(const KvmSystem& system, const KvmVm& vm, int index) {
  UniqueFd fd(ioctl(vm.fd(), KVM_CREATE_VCPU, index));
  if (!fd.valid()) return FailErrno(fmt::format("KVM_CREATE_VCPU {}", index));
  Mapping run =
      FLURRY_TRY_CTX(Mapping::Shared(fd.get(), system.vcpu_mmap_size(), PROT_READ | PROT_WRITE),
                     "mapping kvm_run");
  KvmVcpu vcpu(std::move(fd), std::move(run));
  vcpu.run().kvm_valid_regs = KVM_SYNC_X86_REGS;
  return vcpu;
}

Result<uint32_t> KvmVcpu::Run() {
  if (ioctl(fd_.get(), KVM_RUN, 0) != 0) {
    if (errno == EINTR || errno == EAGAIN) return FailErrno(EINTR, "KVM_RUN interrupted");
    return FailErrno("KVM_RUN");
  }
  return run().exit_reason;
}

void KvmVcpu::RequestImmediateExit(kvm_run& run) {
  std::atomic_ref<uint8_t>(run.immediate_exit).store(1, std::memory_order_seq_cst);
}

void KvmVcpu::ClearImmediateExit() const {
  std::atomic_ref<uint8_t>(run().immediate_exit).store(0, std::memory_order_seq_cst);
}

Result<kvm_regs> KvmVcpu::GetRegs() const {
  kvm_regs regs{};
  if (ioctl(fd_.get(), KVM_GET_REGS, &regs) != 0) return FailErrno("KVM_GET_REGS");
  return regs;
}

Result<void> KvmVcpu::SetRegs(const kvm_regs& regs) const {
  if (ioctl(fd_.get(), KVM_SET_REGS, &regs) != 0) return FailErrno("KVM_SET_REGS");
  return {};
}

Result<kvm_sregs> KvmVcpu::GetSregs() const {
  kvm_sregs sregs{};
  if (ioctl(fd_.get(), KVM_GET_SREGS, &sregs) != 0) return FailErrno("KVM_GET_SREGS");
  return sregs;
}

Result<void> KvmVcpu::SetSregs(const kvm_sregs& sregs) const {
  if (ioctl(fd_.get(), KVM_SET_SREGS, &sregs) != 0) return FailErrno("KVM_SET_SREGS");
  return {};
}

namespace {

template <typename Entry>
std::unique_ptr<uint8_t[]> MakeArray(std::span<const Entry> entries) {
  size_t bytes = sizeof(kvm_abi::ArrayHeader) + entries.size_bytes();
  auto buffer = std::make_unique<uint8_t[]>(bytes);
  kvm_abi::ArrayHeader header{static_cast<uint32_t>(entries.size()), 0};
  std::memcpy(buffer.get(), &header, sizeof header);
  if (!entries.empty()) {
    std::memcpy(buffer.get() + sizeof header, entries.data(), entries.size_bytes());
  }
  return buffer;
}

}  // namespace

Result<void> KvmVcpu::SetMsrs(std::span<const kvm_msr_entry> msrs) const {
  auto buffer = MakeArray(msrs);
  int set = ioctl(fd_.get(), kvm_abi::kSetMsrs, buffer.get());
  if (set < 0) return FailErrno("KVM_SET_MSRS");
  if (static_cast<size_t>(set) != msrs.size()) {
    return Fail("KVM_SET_MSRS: MSR {:#x} was refused", msrs[set].index);
  }
  return {};
}

Result<void> KvmVcpu::GetMsrs(std::span<kvm_msr_entry> msrs) const {
  auto buffer = MakeArray<kvm_msr_entry>(msrs);
  int got = ioctl(fd_.get(), kvm_abi::kGetMsrs, buffer.get());
  if (got < 0) return FailErrno("KVM_GET_MSRS");
  if (static_cast<size_t>(got) != msrs.size()) {
    return Fail("KVM_GET_MSRS: MSR {:#x} could not be read", msrs[got].index);
  }
  std::memcpy(msrs.data(), buffer.get() + sizeof(kvm_abi::ArrayHeader), msrs.size_bytes());
  return {};
}

Result<void> KvmVcpu::SetCpuid(std::span<const kvm_cpuid_entry2> entries) const {
  auto buffer = MakeArray(entries);
  if (ioctl(fd_.get(), kvm_abi::kSetCpuid2, buffer.get()) != 0) return FailErrno("KVM_SET_CPUID2");
  return {};
}

Result<void> KvmVcpu::SetXcr0(uint64_t value) const {
  kvm_xcrs xcrs{};
  xcrs.nr_xcrs = 1;
  xcrs.xcrs[0].xcr = 0;
  xcrs.xcrs[0].value = value;
  if (ioctl(fd_.get(), KVM_SET_XCRS, &xcrs) != 0) {
    return FailErrno(fmt::format("KVM_SET_XCRS (XCR0={:#x})", value));
  }
  return {};
}

Result<kvm_abi::Xsave> KvmVcpu::GetXsave() const {
  kvm_abi::Xsave xsave{};
  if (ioctl(fd_.get(), kvm_abi::kGetXsave, &xsave) != 0) return FailErrno("KVM_GET_XSAVE");
  return xsave;
}

Result<void> KvmVcpu::SetXsave(const kvm_abi::Xsave& xsave) const {
  if (ioctl(fd_.get(), kvm_abi::kSetXsave, &xsave) != 0) return FailErrno("KVM_SET_XSAVE");
  return {};
}

}  // namespace flurry
