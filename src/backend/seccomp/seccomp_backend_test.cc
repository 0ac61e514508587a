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
#include "backend/seccomp/seccomp_backend_test_fixture.h"
#include "backend/seccomp/stub_deadline_for_tests.h"
#include "memory/protection_map.h"

namespace flurry {
namespace {

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

}  // namespace
}  // namespace flurry
