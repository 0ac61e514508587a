// SeccompBackend: the guest runs in a stub process of its own (StubProcess), at the same guest
// addresses as under KVM; seccomp traps its every syscall to the VMM; its RAM is the stub's
// private memory, reached through /proc/PID/mem; VM fork forks the stub, so clones share the
// guest's pages copy-on-write as they do under KVM. See docs/design.md ("The seccomp backend").
//
// Owner: the Vm. Thread: the run thread; Interrupt() from any thread.
#pragma once

#include <atomic>
#include <memory>
#include <optional>

#include "backend/backend.h"
#include "backend/seccomp/stub_process.h"

namespace flurry {

class SeccompBackend final : public Backend {
 public:
  static Result<std::unique_ptr<SeccompBackend>> Create(const GuestLayout& layout);
  ~SeccompBackend() override;

  const char* name() const override { return "seccomp"; }
  GuestMemory& memory() override { return *memory_; }
  Result<void> LoadCpu(const x86::UserCpuState& state) override;
  Result<GuestStop> Run() override;
  x86::UserRegs& regs() override { return regs_; }
  void CompleteSyscall(uint64_t rax) override;
  void MarkSegmentBasesDirty() override { pending_ |= FLURRY_STUB_LOAD_FS | FLURRY_STUB_LOAD_GS; }
  Result<x86::UserCpuState> CaptureCpu() override;
  Result<void> Protect(const ProtectionMap& protections, uint64_t start, uint64_t length) override;
  void Interrupt() override;
  Result<TscInfo> Tsc() override { return TscInfo{}; }
  Result<UniqueFd> TakeUserfault() override { return stub_.TakeUserfault(); }
  uint64_t ram_host_base() override { return 0; }  // the stub holds RAM at the guest's addresses
  Result<void> PrepareFork(bool tied_to_parent) override;
  void AfterForkInParent(bool child_exists) override;
  Result<void> AfterForkInChild() override;
  Result<void> BecomeClone(const x86::UserCpuState& state) override { return LoadCpu(state); }

  const StubProcess& stub() const { return stub_; }

 private:
  SeccompBackend() = default;
  // Takes over `stub`: its VMM-alive lock, its memory.
  Result<void> Drive(StubProcess stub);
  Result<GuestStop> StopFromEvent(uint32_t event);

  StubProcess stub_;
  std::optional<StubProcess> pending_child_;  // between PrepareFork and AfterFork*
  std::optional<GuestMemory> memory_;
  x86::UserRegs regs_;
  // The hole below the guest's stack: never mapped in the stub (not from the shared page,
  // which the guest can write).
  uint64_t guard_start_ = 0;
  uint64_t guard_end_ = 0;
  uint32_t pending_ = 0;  // FLURRY_STUB_LOAD_* for the next RESUME
  bool stopped_ = true;   // the stub waits for a command
  // regs_.fs_base/gs_base are the stub's own (set by a RESUME that loaded them): LoadCpu then
  // loads only bases that change (each is an MSR write, slow when the host is a guest).
  bool bases_loaded_ = false;
};

}  // namespace flurry
