// The seccomp backend's lanes: guest code on several stub threads at once (backend.h, "Lanes";
// docs/protocols/stub.md).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "arch/x86_64/cpu_features.h"
#include "arch/x86_64/layout.h"
#include "backend/seccomp/seccomp_backend.h"
#include "backend/seccomp/seccomp_backend_test_fixture.h"
#include "backend/seccomp/stub_deadline_for_tests.h"
#include "memory/protection_map.h"

namespace flurry {
namespace {

constexpr uint64_t kCode1 = kCode + 0x1000;  // lane 1's code
constexpr uint64_t kStack1 = kStack - 0x10000;

class SeccompLanesTest : public SeccompBackendTest {
 protected:
  void SetUp() override {
    SeccompBackendTest::SetUp();
    if (HasFatalFailure()) return;
    deadline_.emplace(backend_->stub().pid());
    EXPECT_EQ(backend_->max_lanes(), FLURRY_STUB_MAX_LANES);
    EXPECT_TRUE(backend_->LaneExists(0));
    EXPECT_FALSE(backend_->LaneExists(1));
    auto lane = backend_->AddLane();
    ASSERT_TRUE(lane.has_value()) << lane.error().message();
    ASSERT_EQ(*lane, 1);
    EXPECT_TRUE(backend_->LaneExists(1));
    EXPECT_FALSE(backend_->LaneRunning(1));  // idle until its LoadCpu
  }
  void TearDown() override { deadline_.reset(); }

  // Lane `lane` starts `code` at `at` with stack `sp` (and `state`'s other registers).
  void StartLane(int lane, uint64_t at, uint64_t sp, const std::vector<uint8_t>& code,
                 x86::UserCpuState state = {}) {
    ASSERT_TRUE(backend_->memory().Write(at, code.data(), code.size()).has_value());
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

  std::optional<StubDeadline> deadline_;
};

// Lanes running at once, stopping separately and stopped by Interrupt(): tests/integration/
// backend_lanes_test.cc, on this backend and on KVM alike.

// A lane stopped at a syscall stays stopped (its stop is returned once) while the other runs.
TEST_F(SeccompLanesTest, StopsAreReturnedOnceEach) {
  StartLane(0, kCode, kStack, {0x0f, 0x05, 0xeb, 0xfe});  // syscall; jmp .
  StartLane(1, kCode1, kStack1, {0xeb, 0xfe});            // jmp .
  auto stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  EXPECT_EQ(stop->kind, GuestStop::Kind::kSyscall);
  EXPECT_EQ(stop->lane, 0);
  EXPECT_TRUE(backend_->LaneRunning(1));
  EXPECT_FALSE(backend_->LaneRunning(0));
  backend_->SetIdle(0);
  backend_->Interrupt();
  stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  EXPECT_EQ(stop->kind, GuestStop::Kind::kInterrupted);
  EXPECT_EQ(stop->lane, 1);
  EXPECT_EQ(backend_->regs().rip, kCode1);
}

// Each lane has its own FPU: loaded, used and captured per lane. A new lane starts from the
// initial state.
TEST_F(SeccompLanesTest, FpuStateIsPerLane) {
  // movdqu %xmm0, (%rdi); syscall
  const std::vector<uint8_t> store_xmm0 = {0xf3, 0x0f, 0x7f, 0x07, 0x0f, 0x05};
  x86::UserCpuState state;
  state.regs.rdi = kData + 64;
  StartLane(1, kCode1, kStack1, store_xmm0, state);
  auto stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  ASSERT_EQ(stop->lane, 1);
  auto fresh = backend_->CaptureCpu();
  ASSERT_TRUE(fresh.has_value()) << fresh.error().message();
  ASSERT_GE(fresh->xsave.size(), x86::UserCpuState::kMinXsaveBytes);
  uint32_t mxcsr = 0;
  uint16_t fcw = 0;
  std::memcpy(&mxcsr, fresh->xsave.data() + 24, 4);
  std::memcpy(&fcw, fresh->xsave.data(), 2);
  EXPECT_EQ(mxcsr, 0x1f80u);
  EXPECT_EQ(fcw, 0x37fu);

  // Lane 0 gets xmm0 = a0.., lane 1 xmm0 = b0..; each stores its own.
  for (int lane : {0, 1}) {
    x86::UserCpuState s = *fresh;
    for (int i = 0; i < 16; ++i) s.xsave[160 + i] = static_cast<uint8_t>((lane ? 0xb0 : 0xa0) + i);
    uint64_t xstate_bv = 0;
    std::memcpy(&xstate_bv, s.xsave.data() + 512, 8);
    xstate_bv |= 2;  // SSE
    std::memcpy(s.xsave.data() + 512, &xstate_bv, 8);
    s.regs = {};
    s.regs.rdi = kData + 16 * lane;
    StartLane(lane, lane ? kCode1 : kCode, lane ? kStack1 : kStack, store_xmm0, s);
  }
  std::set<int> seen;
  for (int i = 0; i < 2; ++i) {
    stop = RunChecked();
    ASSERT_TRUE(stop.has_value()) << stop.error().message();
    ASSERT_EQ(stop->kind, GuestStop::Kind::kSyscall);
    seen.insert(stop->lane);
    backend_->SetIdle(stop->lane);
  }
  ASSERT_EQ(seen, (std::set<int>{0, 1}));
  for (int lane : {0, 1}) {
    uint8_t stored[16];
    ASSERT_TRUE(backend_->memory().Read(kData + 16 * lane, stored, 16).has_value());
    for (int i = 0; i < 16; ++i) EXPECT_EQ(stored[i], (lane ? 0xb0 : 0xa0) + i) << lane << ":" << i;
    backend_->Select(lane);
    auto captured = backend_->CaptureCpu();
    ASSERT_TRUE(captured.has_value()) << captured.error().message();
    for (int i = 0; i < 16; ++i) {
      EXPECT_EQ(captured->xsave[160 + i], (lane ? 0xb0 : 0xa0) + i) << lane << ":" << i;
    }
    EXPECT_EQ(captured->regs.rdi, kData + 16 * lane);
  }
}

TEST_F(SeccompLanesTest, AddLaneUpToTheLimit) {
  for (int expected = 2; expected < FLURRY_STUB_MAX_LANES; ++expected) {
    backend_->Select(expected % 2);  // from any stopped lane
    auto lane = backend_->AddLane();
    ASSERT_TRUE(lane.has_value()) << lane.error().message();
    EXPECT_EQ(*lane, expected);
  }
  EXPECT_FALSE(backend_->AddLane().has_value());
  backend_->Select(FLURRY_STUB_MAX_LANES);  // ignored: no such lane
  EXPECT_EQ(backend_->selected(), 1);
  // The last one runs.
  StartLane(FLURRY_STUB_MAX_LANES - 1, kCode, kStack, kTwoSyscalls);
  auto stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  EXPECT_EQ(stop->lane, FLURRY_STUB_MAX_LANES - 1);
  EXPECT_EQ(backend_->regs().rax, 257u);
}

// Lanes are added in one batch before any of them runs: once a lane has been resumed, no lane
// is added (the fork token would go through a page while guest code may run on another lane).
// A running selected lane cannot command either.
TEST_F(SeccompLanesTest, AddLaneAfterAnotherLaneRanIsRefused) {
  StartLane(0, kCode, kStack, {0x0f, 0x05, 0xeb, 0xfe});  // syscall; jmp .
  StartLane(1, kCode1, kStack1, {0xeb, 0xfe});            // jmp .
  auto stop = RunChecked();
  ASSERT_TRUE(stop.has_value());
  ASSERT_EQ(stop->lane, 0);
  backend_->Select(1);  // running
  EXPECT_FALSE(backend_->AddLane().has_value());
  backend_->Select(0);
  auto lane = backend_->AddLane();
  ASSERT_FALSE(lane.has_value());
  EXPECT_NE(lane.error().message().find("in one batch"), std::string::npos)
      << lane.error().message();
  EXPECT_FALSE(backend_->LaneExists(2));
  // Nor once lane 1 has stopped again.
  backend_->Interrupt();
  auto stopped = backend_->WaitRunning();
  ASSERT_TRUE(stopped.has_value()) << stopped.error().message();
  ASSERT_TRUE(stopped->has_value());
  EXPECT_EQ((*stopped)->lane, 1);
  EXPECT_EQ((*stopped)->kind, GuestStop::Kind::kInterrupted);
  EXPECT_FALSE(backend_->LaneRunning(1));
  EXPECT_FALSE(backend_->WaitRunning().value().has_value());  // none runs
  backend_->Select(0);
  EXPECT_FALSE(backend_->AddLane().has_value());
}

// Lane 0 counts to 4 with lanes 1-3 and waits until all four have: run one at a time, they
// would never get there (the deadline would fail the test).
TEST_F(SeccompLanesTest, ABatchOfLanesRunsInParallel) {
  for (int expected : {2, 3}) {
    auto lane = backend_->AddLane();
    ASSERT_TRUE(lane.has_value()) << lane.error().message();
    EXPECT_EQ(*lane, expected);
  }
  EXPECT_EQ(backend_->stub().ThreadCount().value(), 4);
  const std::vector<uint8_t> rendezvous = {
      0xb8, 0x01, 0x00, 0x00, 0x00,                          // mov $1, %eax
      0xf0, 0x0f, 0xc1, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00,  // lock xadd %eax, 0x300000
      0x48, 0x83, 0x3c, 0x25, 0x00, 0x00, 0x30, 0x00, 0x04,  // cmpq $4, 0x300000
      0x75, 0xf5,                                            // jne (back to the cmpq)
      0xb8, 0x27, 0x00, 0x00, 0x00,                          // mov $39, %eax
      0x0f, 0x05,                                            // syscall
  };
  ASSERT_TRUE(backend_->memory().WriteObject<uint64_t>(kData, 0).has_value());
  for (int lane = 0; lane < 4; ++lane) {
    StartLane(lane, kCode, kStack - 0x10000 * static_cast<uint64_t>(lane), rendezvous);
  }
  std::set<int> seen;
  for (int i = 0; i < 4; ++i) {
    auto stop = RunChecked();
    ASSERT_TRUE(stop.has_value()) << stop.error().message();
    ASSERT_EQ(stop->kind, GuestStop::Kind::kSyscall);
    EXPECT_EQ(backend_->regs().rax, 39u);
    EXPECT_TRUE(seen.insert(stop->lane).second);
    backend_->SetIdle(stop->lane);
  }
  EXPECT_EQ(seen, (std::set<int>{0, 1, 2, 3}));
  EXPECT_EQ(backend_->memory().ReadObject<uint64_t>(kData).value(), 4u);
}

// Protect and discards go through the selected lane, whichever it is.
TEST_F(SeccompLanesTest, ProtectAndDiscardFromAnotherLane) {
  StartLane(0, kCode, kStack, {0xeb, 0xfe});  // jmp . (keeps running)
  StartLane(1, kCode1, kStack1, kExitWithData);
  ASSERT_TRUE(backend_->memory().WriteObject<uint64_t>(kData, 0x77).has_value());
  auto stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  ASSERT_EQ(stop->lane, 1);
  EXPECT_EQ(backend_->regs().rdi, 0x77u);
  // kData's page: no access; everything else as it was.
  ProtectionMap map;
  map.Set(x86::kUserBase, kRam - x86::kUserBase, kProtAll);
  map.Clear(kData, x86::kPageSize);
  ASSERT_TRUE(backend_->Protect(map, kData, x86::kPageSize).has_value());
  // Discard through lane 1 as well.
  ASSERT_TRUE(backend_->memory().WriteObject<uint64_t>(4 << 20, 9).has_value());
  ASSERT_TRUE(backend_->memory().Discard(4 << 20, x86::kPageSize).has_value());
  EXPECT_EQ(backend_->memory().ReadObject<uint64_t>(4 << 20).value(), 0u);
  // Lane 1 reads kData again: a protection fault.
  x86::UserCpuState state;
  StartLane(1, kCode1, kStack1, kExitWithData, state);
  stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  EXPECT_EQ(stop->lane, 1);
  EXPECT_EQ(stop->kind, GuestStop::Kind::kFault);
  EXPECT_EQ(stop->vector, 14);
  EXPECT_EQ(stop->report.address, kData);
}

// Fork needs the selected lane alone: EndOtherLanes (from lane 0, the stub's main thread) ends
// the others. The child process's backend has lane 0 only, with its registers; the parent can
// then add a new batch of lanes, which runs.
TEST_F(SeccompLanesTest, ForkNeedsTheOtherLanesEnded) {
  SeccompBackend& backend = *backend_;
  ASSERT_TRUE(backend.memory().WriteObject<uint64_t>(kData, 0x1111).has_value());
  // lane 0: getpid; then exit with the word at kData in RDI
  std::vector<uint8_t> code = {0xb8, 0x27, 0x00, 0x00, 0x00, 0x0f, 0x05};
  code.insert(code.end(), kExitWithData.begin(), kExitWithData.end());
  x86::UserCpuState state;
  state.regs.r12 = 0xabc;
  StartLane(0, kCode, kStack, code, state);
  StartLane(1, kCode1, kStack1, {0xeb, 0xfe});  // jmp .
  auto stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  ASSERT_EQ(stop->lane, 0);
  backend.CompleteSyscall(0);
  // Two lanes: no fork.
  auto refused = backend.PrepareFork(/*tied_to_parent=*/true);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("end the other lanes first"), std::string::npos)
      << refused.error().message();
  // Lane 1 runs: it cannot be ended yet.
  EXPECT_FALSE(backend.EndOtherLanes().has_value());
  EXPECT_TRUE(backend.LaneExists(1));
  backend.Interrupt();
  auto stopped = backend.WaitRunning();
  ASSERT_TRUE(stopped.has_value() && stopped->has_value());
  EXPECT_EQ((*stopped)->lane, 1);
  // Not from lane 1: lane 0 is the stub's main thread, which does not end.
  backend.Select(1);
  auto from_one = backend.EndOtherLanes();
  ASSERT_FALSE(from_one.has_value());
  EXPECT_NE(from_one.error().message().find("main thread"), std::string::npos);
  EXPECT_TRUE(backend.LaneExists(0));
  backend.Select(0);
  ASSERT_TRUE(backend.EndOtherLanes().has_value());
  EXPECT_FALSE(backend.LaneExists(1));
  EXPECT_EQ(backend.stub().ThreadCount().value(), 1);

  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  ASSERT_TRUE(backend.PrepareFork(/*tied_to_parent=*/true).has_value());
  const pid_t pid = fork();
  if (pid == 0) {
    close(pipe_fds[0]);
    // lanes (bit mask), selected, threads, RDI and R12 at the exit
    uint64_t report[5] = {0, 0, 0, 0, 0};
    int code_out = 0;
    if (!backend.AfterForkInChild()) code_out = 10;
    for (int k = 0; k < FLURRY_STUB_MAX_LANES; ++k) {
      if (backend.LaneExists(k)) report[0] |= 1u << k;
    }
    report[1] = static_cast<uint64_t>(backend.selected());
    report[2] = static_cast<uint64_t>(backend.stub().ThreadCount().value_or(-1));
    if (code_out == 0 && !backend.memory().WriteObject<uint64_t>(kData, 0x2222)) code_out = 11;
    auto child_stop = code_out == 0 ? backend.Run() : Result<GuestStop>(Fail("skipped"));
    if (code_out == 0 &&
        (!child_stop || child_stop->kind != GuestStop::Kind::kSyscall || child_stop->lane != 0)) {
      code_out = 12;
    }
    report[3] = backend.regs().rdi;
    report[4] = backend.regs().r12;
    (void)!write(pipe_fds[1], report, sizeof report);
    _exit(code_out);
  }
  ASSERT_GT(pid, 0);
  close(pipe_fds[1]);
  backend.AfterForkInParent(/*child_exists=*/true);
  uint64_t report[5] = {0, 0, 0, 0, 0};
  EXPECT_EQ(read(pipe_fds[0], report, sizeof report), static_cast<ssize_t>(sizeof report));
  close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(report[0], 1u);  // lane 0 only
  EXPECT_EQ(report[1], 0u);
  EXPECT_EQ(report[2], 1u);  // one thread
  EXPECT_EQ(report[3], 0x2222u);
  EXPECT_EQ(report[4], 0xabcu);
  // The parent goes on with its own memory.
  stop = RunChecked();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  EXPECT_EQ(stop->lane, 0);
  EXPECT_EQ(backend.regs().rdi, 0x1111u);
  backend.SetIdle(0);

  // A new batch (lane 0 ran, but it starts the batch alone), which runs; lane 1's number is
  // reused.
  for (int expected : {1, 2}) {
    auto lane = backend.AddLane();
    ASSERT_TRUE(lane.has_value()) << lane.error().message();
    EXPECT_EQ(*lane, expected);
  }
  EXPECT_EQ(backend.stub().ThreadCount().value(), 3);
  StartLane(1, kCode1, kStack1, kTwoSyscalls);
  StartLane(2, kCode, kStack, kTwoSyscalls);
  std::set<int> seen;
  for (int i = 0; i < 2; ++i) {
    stop = RunChecked();
    ASSERT_TRUE(stop.has_value()) << stop.error().message();
    EXPECT_EQ(stop->kind, GuestStop::Kind::kSyscall);
    EXPECT_EQ(backend.regs().rax, 257u);
    seen.insert(stop->lane);
    backend.SetIdle(stop->lane);
  }
  EXPECT_EQ(seen, (std::set<int>{1, 2}));
  // The batch has run: no more lanes until the others end again.
  EXPECT_FALSE(backend.AddLane().has_value());
  // Kicks and memory still work after all this.
  backend.Select(0);
  ASSERT_TRUE(backend.EndOtherLanes().has_value());
  StartLane(0, kCode, kStack, {0xeb, 0xfe});
  std::thread interrupter([&] { backend.Interrupt(); });
  stop = RunChecked();
  interrupter.join();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  EXPECT_EQ(stop->kind, GuestStop::Kind::kInterrupted);
  ASSERT_TRUE(backend.memory().WriteObject<uint64_t>(kData, 0x3333).has_value());
  EXPECT_EQ(backend.memory().ReadObject<uint64_t>(kData).value(), 0x3333u);
}

}  // namespace
}  // namespace flurry
