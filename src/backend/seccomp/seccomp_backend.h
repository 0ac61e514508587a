// SeccompBackend: the guest runs in a stub process of its own (StubProcess), at the same guest
// addresses as under KVM; seccomp traps its every syscall to the VMM; its RAM is the stub's
// private memory, reached through /proc/PID/mem; VM fork forks the stub, so clones share the
// guest's pages copy-on-write as they do under KVM. See docs/design.md ("The seccomp backend").
//
// Lanes: each lane is a thread of the stub with a hand-off page of its own; several run guest
// code in parallel while the run thread serves their stops one at a time (backend.h, "Lanes").
//
// Owner: the Vm. Thread: the run thread; Interrupt() from any thread.
#pragma once

#include <array>
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
  x86::UserRegs& regs() override { return lane().regs; }
  void CompleteSyscall(uint64_t rax) override;
  void MarkSegmentBasesDirty() override {
    lane().pending |= FLURRY_STUB_LOAD_FS | FLURRY_STUB_LOAD_GS;
  }
  Result<x86::UserCpuState> CaptureCpu() override;
  Result<void> Protect(const ProtectionMap& protections, uint64_t start, uint64_t length) override;
  void Interrupt() override;
  Result<TscInfo> Tsc() override { return TscInfo{}; }
  Result<UniqueFd> TakeUserfault() override { return stub_.TakeUserfault(selected_); }
  uint64_t ram_host_base() override { return 0; }  // the stub holds RAM at the guest's addresses
  Result<void> PrepareFork(bool tied_to_parent) override;
  void AfterForkInParent(bool child_exists) override;
  Result<void> AfterForkInChild() override;
  Result<void> BecomeClone(const x86::UserCpuState& state) override { return LoadCpu(state); }

  // Lanes (backend.h). max_lanes() is the stub's limit; the VMM decides how many to use.
  int max_lanes() const override { return FLURRY_STUB_MAX_LANES; }
  void InterruptLane(int lane) override { stub_.KickLane(lane); }
  bool LaneExists(int lane) const override { return Valid(lane) && lanes_[lane].exists; }
  Result<int> AddLane() override;
  Result<void> EndOtherLanes() override;
  void Select(int lane) override;
  int selected() const override { return selected_; }
  void SetIdle(int lane) override;
  bool LaneRunning(int lane) const override {
    return LaneExists(lane) && lanes_[lane].active && !lanes_[lane].stopped;
  }
  Result<std::optional<GuestStop>> WaitRunning() override;

  const StubProcess& stub() const { return stub_; }

 private:
  SeccompBackend() = default;
  // Takes over `stub`: its VMM-alive lock, its memory.
  Result<void> Drive(StubProcess stub);
  Result<GuestStop> StopFromEvent(uint32_t event);
  // Waits until one of `running` (resumed lanes) stops; selects it and returns its stop.
  Result<GuestStop> WaitForStop(StubProcess::LaneSet running);

  struct Lane {
    x86::UserRegs regs;
    uint32_t pending = 0;  // FLURRY_STUB_LOAD_* for the next RESUME
    bool stopped = true;   // the lane's thread waits for a command
    // regs.fs_base/gs_base are the thread's own (set by a RESUME that loaded them): LoadCpu then
    // loads only bases that change (each is an MSR write, slow when the host is a guest).
    bool bases_loaded = false;
    // The thread's FPU state was never given by the VMM (a new thread): LoadCpu without an
    // XSAVE image then loads the initial state.
    bool fpu_fresh = true;
    bool active = false;  // from LoadCpu until SetIdle
    bool exists = false;  // the stub has a thread for it
  };
  static bool Valid(int lane) { return lane >= 0 && lane < FLURRY_STUB_MAX_LANES; }
  Lane& lane() { return lanes_[selected_]; }

  StubProcess stub_;
  std::optional<StubProcess> pending_child_;  // between PrepareFork and AfterFork*
  std::optional<GuestMemory> memory_;
  std::array<Lane, FLURRY_STUB_MAX_LANES> lanes_;
  int selected_ = 0;
  // The hole below the guest's stack: never mapped in the stub (not from the shared page,
  // which the guest can write).
  uint64_t guard_start_ = 0;
  uint64_t guard_end_ = 0;
};

}  // namespace flurry
