// Lanes as the Backend interface promises them (src/backend/backend.h, "Lanes"), on the
// backend under test ($FLURRY_BACKEND, once per backend): the KVM backend's vCPUs or the
// seccomp stub's threads, driven with hand-assembled guest code. Under QEMU
// (scripts/kvm_in_qemu.sh) the KVM copies run on nested two-dimensional paging, where the TLB
// flush of a vCPU differs from this machine's.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <vector>

#include "arch/x86_64/layout.h"
#include "backend/backend.h"
#include "memory/protection_map.h"

namespace flurry {
namespace {

constexpr uint64_t kRam = 16 << 20;
constexpr uint64_t kCode0 = 2 << 20;
constexpr uint64_t kCode1 = kCode0 + 0x1000;
constexpr uint64_t kData = 3 << 20;  // 0x300000; the flag word is at kData + 8
constexpr uint64_t kStack0 = 8 << 20;
constexpr uint64_t kStack1 = kStack0 - 0x10000;

// Spins (no syscall) until the flag is 1; getpid; exit(RAX).
const std::vector<uint8_t> kWaitForFlag = {
    0x48, 0x83, 0x3c, 0x25, 0x08, 0x00, 0x30, 0x00, 0x01,  // cmpq $1, 0x300008
    0x75, 0xf5,                                            // jne (back to the cmpq)
    0xb8, 0x27, 0x00, 0x00, 0x00,                          // mov $39, %eax
    0x0f, 0x05,                                            // syscall
    0x48, 0x89, 0xc7,                                      // mov %rax, %rdi
    0xb8, 0x3c, 0x00, 0x00, 0x00,                          // mov $60, %eax
    0x0f, 0x05,                                            // syscall
};
// Sets the flag; gettid; exit(RAX).
const std::vector<uint8_t> kSetFlag = {
    0x48, 0xc7, 0x04, 0x25, 0x08, 0x00, 0x30, 0x00, 0x01, 0, 0, 0,  // movq $1, 0x300008
    0xb8, 0xba, 0x00, 0x00, 0x00,                                   // mov $186, %eax
    0x0f, 0x05,                                                     // syscall
    0x48, 0x89, 0xc7,                                               // mov %rax, %rdi
    0xb8, 0x3c, 0x00, 0x00, 0x00,                                   // mov $60, %eax
    0x0f, 0x05,                                                     // syscall
};
// Sets the flag, then reads kData forever.
const std::vector<uint8_t> kSetFlagThenRead = {
    0x48, 0xc7, 0x04, 0x25, 0x08, 0x00, 0x30, 0x00, 0x01, 0, 0, 0,  // movq $1, 0x300008
    0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00,                 // mov 0x300000, %rax
    0xeb, 0xf6,                                                     // jmp (back to the mov)
};
// Spins until the flag is 1; syscall; spins forever.
const std::vector<uint8_t> kWaitThenSyscallThenSpin = {
    0x48, 0x83, 0x3c, 0x25, 0x08, 0x00, 0x30, 0x00, 0x01,  // cmpq $1, 0x300008
    0x75, 0xf5,                                            // jne (back to the cmpq)
    0x0f, 0x05,                                            // syscall
    0xeb, 0xfe,                                            // jmp .
};
const std::vector<uint8_t> kSpin = {0xeb, 0xfe};  // jmp .

BackendKind KindUnderTest() {
  const char* name = std::getenv("FLURRY_BACKEND");
  auto kind = ParseBackendKind(name != nullptr ? name : "auto");
  return ResolveBackendKind(kind ? *kind : BackendKind::kAuto);
}

class BackendLanes : public ::testing::Test {
 protected:
  void SetUp() override {
    // Kicks of KVM lanes are SIGUSR1 (the flurry binary installs the same no-op handler).
    struct sigaction action {};
    action.sa_handler = [](int) {};
    sigemptyset(&action.sa_mask);
    sigaction(SIGUSR1, &action, nullptr);
    // A lane that never stops would hang Run(): end the test binary instead.
    watchdog_ = std::thread([this] {
      std::unique_lock lock(mutex_);
      if (!done_cv_.wait_for(lock, std::chrono::seconds(60), [this] { return done_; })) {
        std::fprintf(stderr, "backend_lanes_test: a test ran 60 s; a lane never stopped\n");
        _exit(1);
      }
    });
    GuestLayout layout;
    layout.ram_size = kRam;
    layout.guard_start = 12 << 20;
    auto backend = CreateBackend(KindUnderTest(), layout);
    ASSERT_TRUE(backend.has_value()) << backend.error().message();
    backend_ = std::move(*backend);
    ASSERT_GE(backend_->max_lanes(), 2) << backend_->name();
    ASSERT_TRUE(backend_->memory().WriteObject<uint64_t>(kData + 8, 0).has_value());
    EXPECT_TRUE(backend_->LaneExists(0));
    EXPECT_FALSE(backend_->LaneExists(1));
    AddSecondLane();
  }
  void TearDown() override {
    backend_.reset();
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    done_cv_.notify_all();
    watchdog_.join();
  }

  void AddSecondLane() {
    auto lane = backend_->AddLane();
    ASSERT_TRUE(lane.has_value()) << lane.error().message();
    ASSERT_EQ(*lane, 1);
    EXPECT_TRUE(backend_->LaneExists(1));
    EXPECT_FALSE(backend_->LaneRunning(1));  // idle until its LoadCpu
  }
  // Lane `lane` starts `code` at `at` with stack `sp`.
  void StartLane(int lane, uint64_t at, uint64_t sp, const std::vector<uint8_t>& code) {
    ASSERT_TRUE(backend_->memory().Write(at, code.data(), code.size()).has_value());
    x86::UserCpuState state;
    state.regs.rip = at;
    state.regs.rsp = sp;
    backend_->Select(lane);
    ASSERT_EQ(backend_->selected(), lane);
    ASSERT_TRUE(backend_->LoadCpu(state).has_value());
  }
  Result<GuestStop> RunChecked() {
    auto stop = backend_->Run();
    if (stop) {
      EXPECT_EQ(stop->lane, backend_->selected());
    }
    return stop;
  }
  // Both lanes run the flag programs to their exits; each stop comes back once, with its lane's
  // registers, and completes on its lane.
  void RunFlagPrograms() {
    ASSERT_TRUE(backend_->memory().WriteObject<uint64_t>(kData + 8, 0).has_value());
    StartLane(0, kCode0, kStack0, kWaitForFlag);
    StartLane(1, kCode1, kStack1, kSetFlag);
    int stage[2] = {0, 0};
    for (int i = 0; i < 4; ++i) {
      auto stop = RunChecked();
      ASSERT_TRUE(stop.has_value()) << stop.error().message();
      ASSERT_EQ(stop->kind, GuestStop::Kind::kSyscall) << stop->description;
      const int lane = stop->lane;
      ASSERT_TRUE(lane == 0 || lane == 1) << lane;
      EXPECT_FALSE(backend_->LaneRunning(lane));
      const x86::UserRegs& r = backend_->regs();
      EXPECT_EQ(r.rsp, lane == 0 ? kStack0 : kStack1);
      if (stage[lane] == 0) {
        EXPECT_EQ(r.rax, lane == 0 ? 39u : 186u);
        EXPECT_EQ(r.rip, lane == 0 ? kCode0 + 18 : kCode1 + 19);
        backend_->CompleteSyscall(500 + lane);
      } else {
        ASSERT_EQ(stage[lane], 1) << "lane " << lane << " stopped too often";
        EXPECT_EQ(r.rax, 60u);
        EXPECT_EQ(r.rdi, 500u + lane);
        backend_->SetIdle(lane);
        EXPECT_FALSE(backend_->LaneRunning(lane));
      }
      ++stage[lane];
    }
    EXPECT_EQ(stage[0], 2);
    EXPECT_EQ(stage[1], 2);
  }

  std::unique_ptr<Backend> backend_;
  std::mutex mutex_;
  std::condition_variable done_cv_;
  bool done_ = false;
  std::thread watchdog_;
};

// Lane 0 waits for a flag only lane 1 sets, with no stop in between: lanes that ran one at a
// time would spin forever.
TEST_F(BackendLanes, RunAtOnceAndStopSeparately) {
  RunFlagPrograms();
  // No lane active: nothing to run.
  EXPECT_FALSE(backend_->Run().has_value());
}

// Interrupt() (from another thread) stops one running lane; called again after each stop, all.
TEST_F(BackendLanes, InterruptStopsEachRunningLane) {
  StartLane(0, kCode0, kStack0, kSpin);
  StartLane(1, kCode1, kStack1, kSpin);
  std::set<int> seen;
  for (int i = 0; i < 2; ++i) {
    std::thread interrupter([this] { backend_->Interrupt(); });
    auto stop = RunChecked();
    interrupter.join();
    ASSERT_TRUE(stop.has_value()) << stop.error().message();
    ASSERT_EQ(stop->kind, GuestStop::Kind::kInterrupted);
    EXPECT_EQ(backend_->regs().rip, stop->lane == 0 ? kCode0 : kCode1);
    seen.insert(stop->lane);
    backend_->SetIdle(stop->lane);  // stays stopped
  }
  EXPECT_EQ(seen, (std::set<int>{0, 1}));
  EXPECT_FALSE(backend_->LaneRunning(0));
  EXPECT_FALSE(backend_->LaneRunning(1));
}

// InterruptAimed(lane) (from another thread, as the VMM's alarm calls it) stops that lane on
// KVM, whichever other lane runs; aimed at a lane not running, it is an Interrupt(). (The
// seccomp backend's kick is a signal to the stub process, which any of its lanes may take:
// Backend's default, Interrupt().)
TEST_F(BackendLanes, InterruptAimedStopsThatLane) {
  StartLane(0, kCode0, kStack0, kSpin);
  StartLane(1, kCode1, kStack1, kSpin);
  if (KindUnderTest() != BackendKind::kKvm) {
    GTEST_SKIP() << "this backend's InterruptAimed is Interrupt() (InterruptStopsEachRunningLane)";
  }
  // Run() with one kick aimed at lane 1 from another thread, after 20 ms and (wait_for_lane_1)
  // once lane 1 runs: a kick at a lane not running yet would stop another.
  auto run_kicking_lane_1 = [this](bool wait_for_lane_1) {
    std::atomic<bool> stopped{false};
    std::thread interrupter([&] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      while (wait_for_lane_1 && !stopped.load() && !backend_->LaneRunning(1)) {
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
      }
      if (!stopped.load()) backend_->InterruptAimed(1);
    });
    auto stop = RunChecked();
    stopped.store(true);
    interrupter.join();
    return stop;
  };
  for (int round = 0; round < 3; ++round) {
    auto stop = run_kicking_lane_1(true);
    ASSERT_TRUE(stop.has_value()) << stop.error().message();
    ASSERT_EQ(stop->kind, GuestStop::Kind::kInterrupted);
    EXPECT_EQ(stop->lane, 1) << "round " << round;
    EXPECT_EQ(backend_->regs().rip, stop->lane == 0 ? kCode0 : kCode1);
  }
  // Lane 1 idle: the kick aimed at it stops lane 0.
  backend_->SetIdle(1);
  auto stop = run_kicking_lane_1(false);
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  EXPECT_EQ(stop->kind, GuestStop::Kind::kInterrupted);
  EXPECT_EQ(stop->lane, 0);
}

// LaneStoppedNs: on KVM, how long the lane stood stopped before its last run (the VMM's
// measure of what a thread switch costs); -1 before a second run, and where not measured.
TEST_F(BackendLanes, LaneStoppedNsIsTheTimeBetweenRuns) {
  StartLane(0, kCode0, kStack0, kSpin);
  backend_->SetIdle(1);
  const bool measured = KindUnderTest() == BackendKind::kKvm;
  std::optional<int64_t> before_rerun;
  for (int run = 0; run < 2; ++run) {
    std::thread interrupter([this] {
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      backend_->Interrupt();
    });
    auto stop = RunChecked();
    interrupter.join();
    ASSERT_TRUE(stop.has_value()) << stop.error().message();
    ASSERT_EQ(stop->lane, 0);
    if (run == 0) {
      EXPECT_EQ(backend_->LaneStoppedNs(0), -1);                   // ran once
      std::this_thread::sleep_for(std::chrono::milliseconds(50));  // stands stopped
    } else {
      before_rerun = backend_->LaneStoppedNs(0);
    }
  }
  if (measured) {
    EXPECT_GE(*before_rerun, 50'000'000);
    EXPECT_LT(*before_rerun, 60'000'000'000);
  } else {
    EXPECT_EQ(*before_rerun, -1);
  }
}

// Access taken away while a lane runs reaches that lane once Run() resumes the lane that made
// the change: it faults on its next read (a vCPU must not go on with a cached translation).
TEST_F(BackendLanes, AProtectionChangeReachesARunningLane) {
  StartLane(0, kCode0, kStack0, kWaitThenSyscallThenSpin);
  StartLane(1, kCode1, kStack1, kSetFlagThenRead);
  auto stop = RunChecked();  // lane 1 has written to kData's page by now
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  ASSERT_EQ(stop->kind, GuestStop::Kind::kSyscall) << stop->description;
  ASSERT_EQ(stop->lane, 0);
  EXPECT_TRUE(backend_->LaneRunning(1));
  ProtectionMap map;
  map.Set(x86::kUserBase, kRam - x86::kUserBase, kProtAll);
  map.Clear(kData, x86::kPageSize);
  ASSERT_TRUE(backend_->Protect(map, kData, x86::kPageSize).has_value());
  backend_->CompleteSyscall(0);
  stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  EXPECT_EQ(stop->lane, 1);
  ASSERT_EQ(stop->kind, GuestStop::Kind::kFault) << stop->description;
  EXPECT_EQ(stop->vector, 14);
  EXPECT_EQ(stop->report.address, kData);
  EXPECT_EQ(backend_->regs().rip, kCode1 + 12);
}

// A fork needs one lane: refused while two exist. The other lanes end only once stopped; then
// a fork may be prepared, and lanes added again run as before.
TEST_F(BackendLanes, EndingLanesNeedsThemStoppedAndForkNeedsOne) {
  StartLane(0, kCode0, kStack0, {0x0f, 0x05, 0xeb, 0xfe});  // syscall; jmp .
  StartLane(1, kCode1, kStack1, kSpin);
  auto stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  ASSERT_EQ(stop->lane, 0);
  EXPECT_FALSE(backend_->PrepareFork(/*tied_to_parent=*/true).has_value());
  EXPECT_FALSE(backend_->EndOtherLanes().has_value()) << "lane 1 runs";
  EXPECT_TRUE(backend_->LaneExists(1));
  backend_->Interrupt();
  auto stopped = backend_->WaitRunning();
  ASSERT_TRUE(stopped.has_value()) << stopped.error().message();
  ASSERT_TRUE(stopped->has_value());
  EXPECT_EQ((*stopped)->lane, 1);
  backend_->SetIdle(1);
  backend_->Select(0);
  ASSERT_TRUE(backend_->EndOtherLanes().has_value());
  EXPECT_FALSE(backend_->LaneExists(1));
  ASSERT_TRUE(backend_->PrepareFork(/*tied_to_parent=*/true).has_value());
  backend_->AfterForkInParent(/*child_exists=*/false);
  AddSecondLane();
  RunFlagPrograms();
}

// A lane ended and added again (KVM: the same vCPU, idle meanwhile) sees what changed while
// it was gone: a page it had used, made inaccessible while lane 0 ran alone, faults. (On KVM
// a best-effort check: a vCPU that moves to another host CPU is flushed anyway, and QEMU's
// emulation flushes at every entry.)
TEST_F(BackendLanes, ALaneAddedAgainSeesProtectionsChangedWhileItWasGone) {
  // Lane 0 waits for lane 1's write to kData's page; syscall; syscall; jmp .
  std::vector<uint8_t> code = kWaitThenSyscallThenSpin;
  code.insert(code.end() - 2, {0x0f, 0x05});
  StartLane(0, kCode0, kStack0, code);
  StartLane(1, kCode1, kStack1, kSetFlagThenRead);
  auto stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  ASSERT_EQ(stop->lane, 0);
  backend_->Interrupt();
  auto stopped = backend_->WaitRunning();
  ASSERT_TRUE(stopped.has_value()) << stopped.error().message();
  ASSERT_TRUE(stopped->has_value());
  ASSERT_EQ((*stopped)->lane, 1);
  backend_->SetIdle(1);
  backend_->Select(0);
  ASSERT_TRUE(backend_->EndOtherLanes().has_value());
  // Lane 0 alone: kData's page goes, lane 0 runs to its second syscall.
  ProtectionMap map;
  map.Set(x86::kUserBase, kRam - x86::kUserBase, kProtAll);
  map.Clear(kData, x86::kPageSize);
  ASSERT_TRUE(backend_->Protect(map, kData, x86::kPageSize).has_value());
  backend_->CompleteSyscall(0);
  stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  ASSERT_EQ(stop->kind, GuestStop::Kind::kSyscall) << stop->description;
  ASSERT_EQ(stop->lane, 0);
  backend_->CompleteSyscall(0);  // then spins
  AddSecondLane();
  // mov 0x300000, %rax; syscall
  StartLane(1, kCode1, kStack1, {0x48, 0x8b, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00, 0x0f, 0x05});
  stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  EXPECT_EQ(stop->lane, 1);
  ASSERT_EQ(stop->kind, GuestStop::Kind::kFault) << "lane 1 read a page that is gone";
  EXPECT_EQ(stop->vector, 14);
  EXPECT_EQ(stop->report.address, kData);
}

}  // namespace
}  // namespace flurry
