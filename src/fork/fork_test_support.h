// A ForkHost for fork unit tests whose hook calls are counted in memory shared by every process
// forked from the test (snapshot processes and clones included).
#pragma once

#include <sys/mman.h>

#include <atomic>
#include <cstdint>

#include "fork/fork_controller.h"

namespace flurry::testing {

struct HookCounts {
  std::atomic<int> prepare{0};
  std::atomic<int> prepare_untied{0};  // PrepareFork(false)
  std::atomic<int> parent_with_child{0};
  std::atomic<int> parent_without_child{0};
  std::atomic<int> child{0};
  std::atomic<int> release{0};
  std::atomic<int> become_clone{0};
  std::atomic<int> become_clone_bad_state{0};  // BecomeClone whose RAX was not the clone's id
  std::atomic<int> unbalanced{0};  // AfterFork* without a PrepareFork before it (this process)
};

class FakeForkHost : public ForkHost {
 public:
  FakeForkHost() {
    void* p = mmap(nullptr, sizeof(HookCounts), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    counts_ = new (p) HookCounts;
  }
  ~FakeForkHost() override { munmap(counts_, sizeof(HookCounts)); }
  FakeForkHost(const FakeForkHost&) = delete;
  FakeForkHost& operator=(const FakeForkHost&) = delete;

  const HookCounts& counts() const { return *counts_; }

  int prepare_error = 0;  // PrepareFork fails with this errno
  int child_error = 0;    // AfterForkInChild fails with this errno
  uint64_t resume_rip = 0x401000;

  Result<void> PrepareFork(bool tied_to_parent) override {
    if (prepare_error != 0) return FailErrno(prepare_error, "fake PrepareFork");
    counts_->prepare++;
    if (!tied_to_parent) counts_->prepare_untied++;
    pending_ = true;
    return {};
  }
  void AfterForkInParent(bool child_exists) override {
    if (!std::exchange(pending_, false)) counts_->unbalanced++;
    (child_exists ? counts_->parent_with_child : counts_->parent_without_child)++;
  }
  Result<void> AfterForkInChild() override {
    if (!std::exchange(pending_, false)) counts_->unbalanced++;
    counts_->child++;
    if (child_error != 0) return FailErrno(child_error, "fake AfterForkInChild");
    return {};
  }
  void ReleaseGuest() override { counts_->release++; }
  Result<CloneState> CaptureResumeState() override {
    CloneState state;
    state.cpu.regs.rip = resume_rip;
    state.cpu.regs.rax = 0xdead;  // the controller must replace it with the clone's id
    return state;
  }
  Result<CloneState> CaptureCurrentState() override { return CaptureResumeState(); }
  Result<void> BecomeClone(int32_t id, const CloneState& state) override {
    counts_->become_clone++;
    if (state.cpu.regs.rax != static_cast<uint64_t>(id) || state.cpu.regs.rip != resume_rip) {
      counts_->become_clone_bad_state++;
    }
    return {};
  }

 private:
  HookCounts* counts_ = nullptr;
  bool pending_ = false;
};

}  // namespace flurry::testing
