#include "backend/seccomp/seccomp_backend.h"

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
#include "backend/seccomp/stub_deadline_for_tests.h"
#include "memory/protection_map.h"

namespace flurry {
namespace {

constexpr uint64_t kRam = 16 << 20;
constexpr uint64_t kCode = 2 << 20;
constexpr uint64_t kData = 3 << 20;
constexpr uint64_t kStack = 8 << 20;

// mov $257,%eax; syscall; mov %rax,%rdi; mov %rbx,%rsi; mov $60,%eax; syscall
const std::vector<uint8_t> kTwoSyscalls = {0xb8, 0x01, 0x01, 0x00, 0x00, 0x0f, 0x05,
                                           0x48, 0x89, 0xc7, 0x48, 0x89, 0xde, 0xb8,
                                           0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05};
// mov 0x300000,%rdi; mov $60,%eax; syscall
const std::vector<uint8_t> kExitWithData = {0x48, 0x8b, 0x3c, 0x25, 0x00, 0x00, 0x30, 0x00,
                                            0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05};

bool WaitForExit(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  return poll(&p, 1, 10'000) == 1;
}

// The pids of `pid`'s children.
std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t child; in >> child;) out.push_back(child);
  return out;
}

class SeccompBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GuestLayout layout;
    layout.ram_size = kRam;
    layout.guard_start = 12 << 20;
    auto backend = SeccompBackend::Create(layout);
    ASSERT_TRUE(backend.has_value()) << backend.error().message();
    backend_ = std::move(*backend);
  }

  // Places `code` at kCode and loads registers that start it.
  void Start(const std::vector<uint8_t>& code, x86::UserCpuState state = {}) {
    ASSERT_TRUE(backend_->memory().Write(kCode, code.data(), code.size()).has_value());
    state.regs.rip = kCode;
    state.regs.rsp = kStack;
    ASSERT_TRUE(backend_->LoadCpu(state).has_value());
  }
  GuestStop::Kind RunKind() {
    auto stop = backend_->Run();
    EXPECT_TRUE(stop.has_value()) << stop.error().message();
    return stop ? stop->kind : GuestStop::Kind::kInterrupted;
  }

  std::unique_ptr<SeccompBackend> backend_;
};

TEST_F(SeccompBackendTest, Basics) {
  EXPECT_STREQ(backend_->name(), "seccomp");
  EXPECT_FALSE(backend_->memory().is_local());
  EXPECT_EQ(backend_->memory().size(), kRam);
  EXPECT_EQ(backend_->Tsc().value().khz, 0u);
}

TEST_F(SeccompBackendTest, StopsAtSyscallsAndCompletesThem) {
  x86::UserCpuState state;
  state.regs.rdi = 11;
  state.regs.rsi = 22;
  state.regs.rdx = 33;
  state.regs.r10 = 44;
  state.regs.r8 = 55;
  state.regs.r9 = 66;
  state.regs.r15 = 77;
  Start(kTwoSyscalls, state);
  ASSERT_EQ(RunKind(), GuestStop::Kind::kSyscall);
  x86::UserRegs& r = backend_->regs();
  EXPECT_EQ(r.rax, 257u);
  EXPECT_EQ(r.rdi, 11u);
  EXPECT_EQ(r.rsi, 22u);
  EXPECT_EQ(r.rdx, 33u);
  EXPECT_EQ(r.r10, 44u);
  EXPECT_EQ(r.r8, 55u);
  EXPECT_EQ(r.r9, 66u);
  EXPECT_EQ(r.r15, 77u);
  EXPECT_EQ(r.rsp, kStack);
  EXPECT_EQ(r.rip, kCode + 7);
  EXPECT_EQ(r.rcx, r.rip);
  EXPECT_EQ(r.r11, r.rflags);
  // The result in RAX, and any other register the VMM changed.
  r.rbx = 0x5151;
  backend_->CompleteSyscall(static_cast<uint64_t>(-ENOENT));
  ASSERT_EQ(RunKind(), GuestStop::Kind::kSyscall);
  EXPECT_EQ(r.rax, 60u);
  EXPECT_EQ(r.rdi, static_cast<uint64_t>(-ENOENT));
  EXPECT_EQ(r.rsi, 0x5151u);
  EXPECT_EQ(r.rip, kCode + kTwoSyscalls.size());
}

TEST_F(SeccompBackendTest, ReportsFaults) {
  Start({0x0f, 0x0b});  // ud2
  auto stop = backend_->Run();
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->kind, GuestStop::Kind::kFault);
  EXPECT_EQ(stop->vector, 6);
  EXPECT_EQ(stop->signal, SIGILL);
  EXPECT_FALSE(stop->description.empty());
  EXPECT_EQ(backend_->regs().rip, kCode);

  Start({0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0});  // mov 0x0, %rax
  stop = backend_->Run();
  ASSERT_TRUE(stop.has_value());
  EXPECT_EQ(stop->kind, GuestStop::Kind::kFault);
  EXPECT_EQ(stop->vector, 14);
  EXPECT_EQ(stop->signal, SIGSEGV);
  EXPECT_EQ(backend_->regs().rip, kCode);
}

TEST_F(SeccompBackendTest, InterruptStopsTheGuest) {
  Start({0xeb, 0xfe});    // jmp .
  backend_->Interrupt();  // before Run: the stop comes as soon as the guest runs
  ASSERT_EQ(RunKind(), GuestStop::Kind::kInterrupted);
  EXPECT_EQ(backend_->regs().rip, kCode);
  // From another thread, while Run waits.
  std::thread interrupter([this] { backend_->Interrupt(); });
  EXPECT_EQ(RunKind(), GuestStop::Kind::kInterrupted);
  interrupter.join();
}

TEST_F(SeccompBackendTest, AppliesSegmentBasesWhenMarked) {
  ASSERT_TRUE(backend_->memory().WriteObject<uint64_t>((5 << 20) + 8, 0x1234).has_value());
  // syscall; mov %fs:8,%rdi; syscall
  Start({0x0f, 0x05, 0x64, 0x48, 0x8b, 0x3c, 0x25, 0x08, 0x00, 0x00, 0x00, 0x0f, 0x05});
  ASSERT_EQ(RunKind(), GuestStop::Kind::kSyscall);
  backend_->regs().fs_base = 5 << 20;
  backend_->MarkSegmentBasesDirty();
  backend_->CompleteSyscall(0);
  ASSERT_EQ(RunKind(), GuestStop::Kind::kSyscall);
  EXPECT_EQ(backend_->regs().rdi, 0x1234u);
  EXPECT_EQ(backend_->regs().fs_base, uint64_t{5 << 20});  // kept across stops
}

TEST_F(SeccompBackendTest, CapturesAndLoadsTheFpuState) {
  // movdqu %xmm0, 0x300000; syscall
  const std::vector<uint8_t> store_xmm0 = {0xf3, 0x0f, 0x7f, 0x04, 0x25, 0x00,
                                           0x00, 0x30, 0x00, 0x0f, 0x05};
  Start(store_xmm0);
  ASSERT_EQ(RunKind(), GuestStop::Kind::kSyscall);
  auto captured = backend_->CaptureCpu();
  ASSERT_TRUE(captured.has_value()) << captured.error().message();
  EXPECT_EQ(captured->regs, backend_->regs());
  EXPECT_EQ(captured->xcr0, x86::HostXcr0());
  ASSERT_GE(captured->xsave.size(), x86::UserCpuState::kMinXsaveBytes);
  for (size_t i = 464; i < 512; ++i) EXPECT_EQ(captured->xsave[i], 0) << "byte " << i;

  // xmm0 := 16 known bytes (legacy area offset 160), marked present in XSTATE_BV.
  x86::UserCpuState state = *captured;
  for (int i = 0; i < 16; ++i) state.xsave[160 + i] = static_cast<uint8_t>(0xa0 + i);
  uint64_t xstate_bv = 0;
  std::memcpy(&xstate_bv, state.xsave.data() + 512, 8);
  xstate_bv |= 2;  // SSE
  std::memcpy(state.xsave.data() + 512, &xstate_bv, 8);
  state.regs.rip = kCode;
  state.regs.rsp = kStack;
  ASSERT_TRUE(backend_->LoadCpu(state).has_value());
  ASSERT_EQ(RunKind(), GuestStop::Kind::kSyscall);
  uint8_t stored[16];
  ASSERT_TRUE(backend_->memory().Read(kData, stored, 16).has_value());
  for (int i = 0; i < 16; ++i) EXPECT_EQ(stored[i], 0xa0 + i) << "byte " << i;
  // And captured back.
  auto again = backend_->CaptureCpu();
  ASSERT_TRUE(again.has_value());
  EXPECT_EQ(std::vector<uint8_t>(again->xsave.begin() + 160, again->xsave.begin() + 176),
            std::vector<uint8_t>(state.xsave.begin() + 160, state.xsave.begin() + 176));
}

TEST_F(SeccompBackendTest, RejectsUnusableFpuImages) {
  x86::UserCpuState state;
  state.xsave.assign(FLURRY_STUB_XSAVE_MAX + 64, 0);
  EXPECT_FALSE(backend_->LoadCpu(state).has_value());
  if (x86::HostXcr0() == 0 || (x86::HostXcr0() >> 62) != 0) {
    GTEST_SKIP() << "cannot pick a state component the host lacks";
  }
  state.xsave.assign(x86::UserCpuState::kMinXsaveBytes, 0);
  const uint64_t foreign = 1ULL << 62;
  std::memcpy(state.xsave.data() + 512, &foreign, 8);
  EXPECT_FALSE(backend_->LoadCpu(state).has_value());
}

TEST_F(SeccompBackendTest, ForkThatFailsThrowsTheCopyAway) {
  Start(kTwoSyscalls);
  ASSERT_EQ(RunKind(), GuestStop::Kind::kSyscall);
  const pid_t stub = backend_->stub().pid();
  ASSERT_TRUE(ChildrenOf(stub).empty());
  ASSERT_TRUE(backend_->PrepareFork(/*tied_to_parent=*/true).has_value());
  const auto children = ChildrenOf(stub);
  ASSERT_EQ(children.size(), 1u);
  UniqueFd copy(static_cast<int>(syscall(SYS_pidfd_open, children[0], 0)));
  ASSERT_TRUE(copy.valid());
  backend_->AfterForkInParent(/*child_exists=*/false);
  EXPECT_TRUE(WaitForExit(copy.get()));
  EXPECT_FALSE(backend_->AfterForkInChild().has_value());  // nothing pending any more
  // The guest goes on.
  backend_->CompleteSyscall(5);
  ASSERT_EQ(RunKind(), GuestStop::Kind::kSyscall);
  EXPECT_EQ(backend_->regs().rdi, 5u);
}

// A forked VMM process drives the forked stub; each side has its own copy of the guest.
void ForkAndRunBothSides(SeccompBackend& backend, bool tied) {
  ASSERT_TRUE(backend.memory().WriteObject<uint64_t>(kData, 0x1111).has_value());
  ASSERT_TRUE(backend.memory().Write(kCode, kExitWithData.data(), kExitWithData.size()));
  x86::UserCpuState state;
  state.regs.rip = kCode;
  state.regs.rsp = kStack;
  ASSERT_TRUE(backend.LoadCpu(state).has_value());
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  ASSERT_TRUE(backend.PrepareFork(tied).has_value());
  const pid_t pid = fork();
  if (pid == 0) {
    // The new VMM: no gtest assertions here, only an exit code and a report.
    close(pipe_fds[0]);
    uint64_t report[2] = {0, 0};  // [0]: the stub's pid, [1]: RDI at exit
    int code = 0;
    if (!backend.AfterForkInChild()) code = 10;
    report[0] = static_cast<uint64_t>(backend.stub().pid());
    if (code == 0 && !backend.memory().WriteObject<uint64_t>(kData, 0x2222)) code = 11;
    auto stop = code == 0 ? backend.Run() : Result<GuestStop>(Fail("skipped"));
    if (code == 0 && (!stop || stop->kind != GuestStop::Kind::kSyscall)) code = 12;
    report[1] = backend.regs().rdi;
    (void)!write(pipe_fds[1], report, sizeof report);
    _exit(code);
  }
  ASSERT_GT(pid, 0);
  close(pipe_fds[1]);
  backend.AfterForkInParent(/*child_exists=*/true);
  uint64_t report[2] = {0, 0};
  EXPECT_EQ(read(pipe_fds[0], report, sizeof report), static_cast<ssize_t>(sizeof report));
  close(pipe_fds[0]);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  ASSERT_EQ(WEXITSTATUS(status), 0);
  EXPECT_NE(report[0], static_cast<uint64_t>(backend.stub().pid()));
  EXPECT_EQ(report[1], 0x2222u);
  // The child's stub ends with the VMM process that drove it (gone already, or soon).
  UniqueFd child_stub(static_cast<int>(syscall(SYS_pidfd_open, report[0], 0)));
  if (child_stub.valid()) {
    EXPECT_TRUE(WaitForExit(child_stub.get()));
  }
  // This side is untouched and still runs.
  EXPECT_EQ(backend.memory().ReadObject<uint64_t>(kData).value(), 0x1111u);
  auto stop = backend.Run();
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  EXPECT_EQ(stop->kind, GuestStop::Kind::kSyscall);
  EXPECT_EQ(backend.regs().rdi, 0x1111u);
}

TEST_F(SeccompBackendTest, ForkGivesTheChildProcessACopy) {
  ForkAndRunBothSides(*backend_, /*tied=*/true);
}

TEST_F(SeccompBackendTest, DetachedForkGivesTheChildProcessACopy) {
  ForkAndRunBothSides(*backend_, /*tied=*/false);
}

TEST_F(SeccompBackendTest, DiscardGoesThroughTheStub) {
  GuestMemory& mem = backend_->memory();
  ASSERT_TRUE(mem.WriteObject<uint64_t>(4 << 20, 9).has_value());
  ASSERT_TRUE(mem.Discard(4 << 20, x86::kPageSize).has_value());
  EXPECT_FALSE(mem.PopulatedPages().value()[(4 << 20) / x86::kPageSize]);
  EXPECT_EQ(mem.ReadObject<uint64_t>(4 << 20).value(), 0u);
  EXPECT_EQ(mem.Discard((4 << 20) + 1, x86::kPageSize).error().code(), EINVAL);
}

// ---- lanes ------------------------------------------------------------------------------------

constexpr uint64_t kCode1 = kCode + 0x1000;  // lane 1's code
constexpr uint64_t kStack1 = kStack - 0x10000;

// Lane 0: spins (no syscall) until the word at kData is 1; then getpid; then exit(RAX).
const std::vector<uint8_t> kWaitForFlag = {
    0x48, 0x83, 0x3c, 0x25, 0x00, 0x00, 0x30, 0x00, 0x01,  // cmpq $1, 0x300000
    0x75, 0xf5,                                            // jne (back to the cmpq)
    0xb8, 0x27, 0x00, 0x00, 0x00,                          // mov $39, %eax
    0x0f, 0x05,                                            // syscall
    0x48, 0x89, 0xc7,                                      // mov %rax, %rdi
    0xb8, 0x3c, 0x00, 0x00, 0x00,                          // mov $60, %eax
    0x0f, 0x05,                                            // syscall
};
// Lane 1: spins a little, sets the word at kData to 1; then gettid; then exit(RAX).
const std::vector<uint8_t> kSetFlag = {
    0xb9, 0x00, 0x00, 0x10, 0x00,                                   // mov $0x100000, %ecx
    0xff, 0xc9,                                                     // dec %ecx
    0x75, 0xfc,                                                     // jnz (back to dec)
    0x48, 0xc7, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00, 0x01, 0, 0, 0,  // movq $1, 0x300000
    0xb8, 0xba, 0x00, 0x00, 0x00,                                   // mov $186, %eax
    0x0f, 0x05,                                                     // syscall
    0x48, 0x89, 0xc7,                                               // mov %rax, %rdi
    0xb8, 0x3c, 0x00, 0x00, 0x00,                                   // mov $60, %eax
    0x0f, 0x05,                                                     // syscall
};

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

// Lane 0 waits for a flag only lane 1 sets, with no stop in between: with one lane running at
// a time it would spin forever (and the deadline would fail the test). Each lane's syscalls
// come back from Run() with its number and its registers, and complete on their own lane.
TEST_F(SeccompLanesTest, LanesRunInParallelAndStopSeparately) {
  ASSERT_TRUE(backend_->memory().WriteObject<uint64_t>(kData, 0).has_value());
  StartLane(0, kCode, kStack, kWaitForFlag);
  StartLane(1, kCode1, kStack1, kSetFlag);
  // Each lane: its first syscall (completed with 500 + lane), then exit(RAX). Run() resumes
  // every stopped active lane, so one lane may get to its exit before the other's first stop.
  int stage[2] = {0, 0};
  for (int i = 0; i < 4; ++i) {
    auto stop = RunChecked();
    ASSERT_TRUE(stop.has_value()) << stop.error().message();
    ASSERT_EQ(stop->kind, GuestStop::Kind::kSyscall);
    const int lane = stop->lane;
    ASSERT_TRUE(lane == 0 || lane == 1) << lane;
    EXPECT_FALSE(backend_->LaneRunning(lane));
    const x86::UserRegs& r = backend_->regs();
    EXPECT_EQ(r.rsp, lane == 0 ? kStack : kStack1);
    if (stage[lane] == 0) {
      EXPECT_EQ(r.rax, lane == 0 ? 39u : 186u);
      EXPECT_EQ(r.rip, lane == 0 ? kCode + 18 : kCode1 + 28);
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
  // No lane active: nothing to run.
  EXPECT_FALSE(backend_->Run().has_value());
}

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

// Interrupt() stops one running lane; called again after each stop, all of them.
TEST_F(SeccompLanesTest, InterruptStopsRunningLanes) {
  StartLane(0, kCode, kStack, {0xeb, 0xfe});    // jmp .
  StartLane(1, kCode1, kStack1, {0xeb, 0xfe});  // jmp .
  std::set<int> seen;
  for (int i = 0; i < 2; ++i) {
    std::thread interrupter([this] { backend_->Interrupt(); });
    auto stop = RunChecked();
    interrupter.join();
    ASSERT_TRUE(stop.has_value()) << stop.error().message();
    ASSERT_EQ(stop->kind, GuestStop::Kind::kInterrupted);
    EXPECT_EQ(backend_->regs().rip, stop->lane == 0 ? kCode : kCode1);
    seen.insert(stop->lane);
    backend_->SetIdle(stop->lane);  // stays stopped
  }
  EXPECT_EQ(seen, (std::set<int>{0, 1}));
  EXPECT_FALSE(backend_->LaneRunning(0));
  EXPECT_FALSE(backend_->LaneRunning(1));
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
