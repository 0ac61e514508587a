#include "backend/seccomp/stub_process.h"

#include <elf.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <condition_variable>
#include <cstring>
#include <fstream>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "arch/x86_64/layout.h"
#include "backend/seccomp/stub_deadline_for_tests.h"
#include "backend/seccomp/stub_process_test_fixture.h"
#include "memory/guest_memory.h"

namespace flurry {

extern const uint8_t kStubImage[];
extern const size_t kStubImage_size;

namespace {

TEST_F(StubProcessTest, MapsTheLayout) {
  const auto pages = mem().PopulatedPages();
  ASSERT_TRUE(pages.has_value());
  // Guest RAM is writable at guest addresses; the guard is not mapped.
  ASSERT_TRUE(mem().WriteObject<uint64_t>(kData, 42).has_value());
  EXPECT_EQ(mem().ReadObject<uint64_t>(kData).value(), 42u);
  EXPECT_EQ(mem().WriteObject<uint64_t>(kGuard + 64, 1).error().code(), EFAULT);
  EXPECT_EQ(mem().WriteObject<uint64_t>(kGuard + x86::kHugePageSize - 8, 1).error().code(), EFAULT);
  EXPECT_TRUE(mem().WriteObject<uint64_t>(kGuard + x86::kHugePageSize, 1).has_value());
  EXPECT_TRUE(mem().WriteObject<uint64_t>(kRam - 8, 1).has_value());
  // The vvar and vDSO pages exist (the VMM fills them through /proc/PID/mem).
  EXPECT_TRUE(mem().WritePhysical(x86::kVvarAddr, "v", 1).has_value());
  EXPECT_TRUE(mem().WritePhysical(x86::kVdsoAddr, "d", 1).has_value());
  EXPECT_EQ(mem().WritePhysical(0, "0", 1).error().code(), EFAULT);
}

TEST_F(StubProcessTest, TrapsSyscallsAndResumesWithNewRegisters) {
  ASSERT_EQ(RunCode(stub_, mem(), kGetpidThenExitWithRax), FLURRY_STUB_EVENT_SYSCALL);
  volatile flurry_stub_shared& s = stub_.shared();
  EXPECT_EQ(s.syscall_nr, 39u);
  EXPECT_EQ(s.regs.rip, kCode + 7);  // past the syscall instruction
  EXPECT_EQ(s.regs.rcx, kCode + 7);  // as the syscall instruction leaves them
  EXPECT_EQ(s.regs.r11, s.regs.rflags);
  EXPECT_EQ(s.regs.rflags & 0xfff, 0x202u);
  EXPECT_EQ(s.regs.rsp, kStack);
  // The VMM's answer in RAX; the guest goes on past the syscall.
  s.regs.rax = 1234;
  ASSERT_EQ(Resume(stub_, FLURRY_STUB_LOAD_REGS), FLURRY_STUB_EVENT_SYSCALL);
  EXPECT_EQ(s.syscall_nr, 60u);
  EXPECT_EQ(s.regs.rdi, 1234u);
  EXPECT_EQ(s.regs.rip, kCode + kGetpidThenExitWithRax.size());
}

TEST_F(StubProcessTest, ResumeWithoutLoadKeepsTheFrame) {
  ASSERT_EQ(RunCode(stub_, mem(), kGetpidThenExitWithRax), FLURRY_STUB_EVENT_SYSCALL);
  stub_.shared().regs.rip = 0;  // ignored without LOAD_REGS
  ASSERT_EQ(Resume(stub_, 0), FLURRY_STUB_EVENT_SYSCALL);
  EXPECT_EQ(stub_.shared().syscall_nr, 60u);
  // RAX is whatever the trapped syscall left there: the kernel restores the syscall number.
  EXPECT_EQ(stub_.shared().regs.rdi, 39u);
}

TEST_F(StubProcessTest, LoadsTheFsBase) {
  ASSERT_TRUE(mem().WriteObject<uint64_t>((5 << 20) + 16, 0xabcdef).has_value());
  const std::vector<uint8_t> code = {
      0x64, 0x48, 0x8b, 0x3c, 0x25, 0x10, 0x00, 0x00, 0x00,  // mov %fs:0x10, %rdi
      0x0f, 0x05,                                            // syscall (rax = 0)
  };
  ASSERT_TRUE(mem().Write(kCode, code.data(), code.size()).has_value());
  SetRegs(stub_.shared().regs, kCode);
  stub_.shared().regs.fs_base = 5 << 20;
  ASSERT_EQ(Resume(stub_, FLURRY_STUB_LOAD_REGS | FLURRY_STUB_LOAD_FS), FLURRY_STUB_EVENT_SYSCALL);
  EXPECT_EQ(stub_.shared().regs.rdi, 0xabcdefu);
  EXPECT_EQ(stub_.shared().syscall_nr, 0u);
}

TEST_F(StubProcessTest, ReportsAnInvalidOpcode) {
  ASSERT_EQ(RunCode(stub_, mem(), {0x0f, 0x0b}), FLURRY_STUB_EVENT_FAULT);  // ud2
  volatile flurry_stub_shared& s = stub_.shared();
  EXPECT_EQ(s.signo, SIGILL);
  EXPECT_EQ(s.trapno, 6u);
  EXPECT_EQ(s.regs.rip, kCode);
  EXPECT_EQ(s.fault_addr, kCode);
}

TEST_F(StubProcessTest, ReportsANullRead) {
  const std::vector<uint8_t> code = {0x48, 0x8b, 0x04, 0x25, 0, 0, 0, 0};  // mov 0x0, %rax
  ASSERT_EQ(RunCode(stub_, mem(), code), FLURRY_STUB_EVENT_FAULT);
  volatile flurry_stub_shared& s = stub_.shared();
  EXPECT_EQ(s.signo, SIGSEGV);
  EXPECT_EQ(s.si_code, SEGV_MAPERR);
  EXPECT_EQ(s.trapno, 14u);
  EXPECT_EQ(s.fault_addr, 0u);
  EXPECT_EQ(s.error_code, 4u);  // user-mode read of a page not present
  EXPECT_EQ(s.regs.rip, kCode);
}

TEST_F(StubProcessTest, ReportsAWriteToTheGuard) {
  const std::vector<uint8_t> code = {0x48, 0x89, 0x04, 0x25, 0x08, 0x00, 0xc0, 0x00};
  ASSERT_EQ(RunCode(stub_, mem(), code), FLURRY_STUB_EVENT_FAULT);  // mov %rax, 0xc00008
  EXPECT_EQ(stub_.shared().signo, SIGSEGV);
  EXPECT_EQ(stub_.shared().trapno, 14u);
  EXPECT_EQ(stub_.shared().fault_addr, kGuard + 8);
  EXPECT_EQ(stub_.shared().error_code, 6u);  // user-mode write, not present
}

TEST_F(StubProcessTest, ReportsA32BitSyscall) {
  const std::vector<uint8_t> code = {0xb8, 0x14, 0, 0, 0, 0xcd, 0x80};  // mov $20,%eax; int $0x80
  const uint32_t event = RunCode(stub_, mem(), code);
  if (event == FLURRY_STUB_EVENT_FAULT && stub_.shared().signo == SIGSEGV) {
    GTEST_SKIP() << "this kernel has no 32-bit syscall entry (int 0x80 faults)";
  }
  EXPECT_EQ(event, FLURRY_STUB_EVENT_BAD_ARCH);
  EXPECT_EQ(stub_.shared().syscall_nr, 20u);
}

TEST_F(StubProcessTest, KickStopsASpinningGuest) {
  ASSERT_TRUE(mem().Write(kCode, "\xeb\xfe", 2).has_value());  // jmp .
  SetRegs(stub_.shared().regs, kCode);
  stub_.shared().resume_flags = FLURRY_STUB_LOAD_REGS;
  stub_.Post(FLURRY_STUB_CMD_RESUME);
  stub_.Kick();
  ASSERT_EQ(stub_.Wait().value(), FLURRY_STUB_EVENT_KICKED);
  EXPECT_EQ(stub_.shared().regs.rip, kCode);
  // And again, after resuming from the kick.
  stub_.shared().resume_flags = 0;
  stub_.Post(FLURRY_STUB_CMD_RESUME);
  stub_.Kick();
  ASSERT_EQ(stub_.Wait().value(), FLURRY_STUB_EVENT_KICKED);
  EXPECT_EQ(stub_.shared().regs.rip, kCode);
}

TEST_F(StubProcessTest, MadviseCommandDiscardsAndReportsErrors) {
  const uint64_t page = 4 << 20;
  ASSERT_TRUE(mem().WriteObject<uint64_t>(page + 8, 77).has_value());
  volatile flurry_stub_shared& s = stub_.shared();
  s.args[0] = page;
  s.args[1] = x86::kPageSize;
  s.args[2] = MADV_DONTNEED;
  EXPECT_EQ(stub_.Command(FLURRY_STUB_CMD_MADVISE).value(), 0);
  EXPECT_EQ(stub_.shared().event, FLURRY_STUB_EVENT_DONE);
  EXPECT_EQ(mem().ReadObject<uint64_t>(page + 8).value(), 0u);
  s.args[0] = page + 1;  // unaligned
  EXPECT_EQ(stub_.Command(FLURRY_STUB_CMD_MADVISE).value(), -EINVAL);
  EXPECT_EQ(stub_.Command(99).value(), -EINVAL);  // unknown command
  // Still stopped and resumable.
  ASSERT_EQ(RunCode(stub_, mem(), kGetpidThenExitWithRax), FLURRY_STUB_EVENT_SYSCALL);
  EXPECT_EQ(stub_.shared().syscall_nr, 39u);
}

TEST_F(StubProcessTest, ForkedStubHasACopyOnWriteCopy) {
  ASSERT_TRUE(mem().WriteObject<uint64_t>(kData, 0x1111).has_value());
  ASSERT_EQ(RunCode(stub_, mem(), kGetpidThenExitWithRax), FLURRY_STUB_EVENT_SYSCALL);
  auto forked = stub_.Fork(/*die_with_parent=*/true);
  ASSERT_TRUE(forked.has_value()) << forked.error().message();
  StubProcess child = std::move(*forked);
  StubDeadline child_deadline(child.pid());
  EXPECT_NE(child.pid(), stub_.pid());
  EXPECT_NE(&child.shared(), &stub_.shared());
  EXPECT_EQ(child.shared().event, FLURRY_STUB_EVENT_FORKED);
  EXPECT_EQ(child.shared().ram_size, kRam);
  EXPECT_EQ(child.shared().guard_start, kGuard);
  EXPECT_EQ(child.shared().fork_token, 0u);  // never handed to the guest's address space
  EXPECT_EQ(stub_.shared().event, FLURRY_STUB_EVENT_DONE);
  EXPECT_EQ(stub_.shared().result, child.pid());
  ASSERT_TRUE(child.Adopt().has_value());
  GuestMemory child_mem = OpenMemory(child);

  // The child sees the parent's memory as of the fork; writes on either side stay there.
  EXPECT_EQ(child_mem.ReadObject<uint64_t>(kData).value(), 0x1111u);
  ASSERT_TRUE(child_mem.WriteObject<uint64_t>(kData, 0x2222).has_value());
  EXPECT_EQ(mem().ReadObject<uint64_t>(kData).value(), 0x1111u);
  ASSERT_TRUE(mem().WriteObject<uint64_t>(kData + 8, 0x3333).has_value());
  EXPECT_EQ(child_mem.ReadObject<uint64_t>(kData + 8).value(), 0u);

  // Both run guest code, each on its own memory.
  ASSERT_EQ(RunCode(child, child_mem, kExitWithData), FLURRY_STUB_EVENT_SYSCALL);
  EXPECT_EQ(child.shared().regs.rdi, 0x2222u);
  ASSERT_EQ(RunCode(stub_, mem(), kExitWithData), FLURRY_STUB_EVENT_SYSCALL);
  EXPECT_EQ(stub_.shared().regs.rdi, 0x1111u);
}

TEST_F(StubProcessTest, TiedForkDiesWithItsParentStub) {
  auto child = stub_.Fork(/*die_with_parent=*/true);
  ASSERT_TRUE(child.has_value()) << child.error().message();
  UniqueFd child_pidfd(static_cast<int>(syscall(SYS_pidfd_open, child->pid(), 0)));
  ASSERT_TRUE(child_pidfd.valid());
  child->Release();  // only the parent stub's death may end it
  deadline_.reset();
  stub_ = StubProcess();
  // At once: well before the 10 s after which a stub nobody adopted ends itself.
  EXPECT_TRUE(WaitForExit(child_pidfd.get(), 3'000));
}

// A forked stub whose VMM died before adopting it (nobody ever writes its liveness word) ends
// itself after 10 s, though the stub it was forked from lives on (docs/protocols/stub.md,
// "VMM liveness").
TEST_F(StubProcessTest, AForkNobodyAdoptsEndsItselfAfterTenSeconds) {
  auto child = stub_.Fork(/*die_with_parent=*/false);
  ASSERT_TRUE(child.has_value()) << child.error().message();
  UniqueFd child_pidfd(static_cast<int>(syscall(SYS_pidfd_open, child->pid(), 0)));
  ASSERT_TRUE(child_pidfd.valid());
  child->Release();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_FALSE(WaitForExit(child_pidfd.get(), 8'000)) << "it must give its VMM time";
  EXPECT_TRUE(WaitForExit(child_pidfd.get(), 20'000));
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::seconds(8));
}

TEST_F(StubProcessTest, DetachedForkOutlivesItsParentStub) {
  auto child = stub_.Fork(/*die_with_parent=*/false);
  ASSERT_TRUE(child.has_value()) << child.error().message();
  UniqueFd parent_pidfd(static_cast<int>(syscall(SYS_pidfd_open, stub_.pid(), 0)));
  deadline_.reset();
  stub_ = StubProcess();
  ASSERT_TRUE(WaitForExit(parent_pidfd.get()));
  // Still there, and still serving. (Adopted only now: see the disabled test below.)
  ASSERT_TRUE(child->Adopt().has_value());
  GuestMemory child_mem = OpenMemory(*child);
  StubDeadline child_deadline(child->pid());
  ASSERT_EQ(RunCode(*child, child_mem, kGetpidThenExitWithRax), FLURRY_STUB_EVENT_SYSCALL);
  EXPECT_EQ(child->shared().syscall_nr, 39u);
}

// BUG (disabled until fixed): one thread drives two stubs, then lets go of the first one
// adopted. StubProcess::Release() rewrites the whole VMM-alive mutex from the copy Adopt()
// took, robust-list links included; but adopting the second stub changed the first one's
// `prev` link (glibc links robust mutexes through the mutexes themselves). Unlocking with the
// stale link unlinks the second stub's mutex from the thread's robust list too (and leaves it
// pointing into the first stub's unmapped page: under ASan the second unlock then crashes).
// Observable here: the second stub no longer learns that its VMM thread died.
// A process drives one stub at a time: after it moved on to a second stub and let the first
// go, the second still ends with the process.
TEST(StubProcess, SecondStubEndsWithItsProcessAfterTheFirstIsReleased) {
  auto first = StubProcess::Launch(TestLayout());
  auto second = StubProcess::Launch(TestLayout());
  ASSERT_TRUE(first.has_value() && second.has_value());
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, second->pid(), 0)));
  const pid_t driver = fork();
  ASSERT_GE(driver, 0);
  if (driver == 0) {
    if (!first->Adopt() || !second->Adopt()) _exit(1);
    *first = StubProcess();  // kills and releases the first
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(driver, &status, 0), driver);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(WaitForExit(pidfd.get())) << "the second stub outlived its VMM process";
}

TEST_F(StubProcessTest, DiesWhenDestroyed) {
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, stub_.pid(), 0)));
  ASSERT_TRUE(pidfd.valid());
  deadline_.reset();
  stub_ = StubProcess();
  EXPECT_FALSE(stub_.valid());
  EXPECT_TRUE(WaitForExit(pidfd.get()));
}

TEST_F(StubProcessTest, WaitFailsWhenTheStubDies) {
  ASSERT_TRUE(mem().Write(kCode, "\xeb\xfe", 2).has_value());  // jmp .
  SetRegs(stub_.shared().regs, kCode);
  stub_.shared().resume_flags = FLURRY_STUB_LOAD_REGS;
  stub_.Post(FLURRY_STUB_CMD_RESUME);
  kill(stub_.pid(), SIGKILL);
  auto event = stub_.Wait();
  ASSERT_FALSE(event.has_value());
  EXPECT_NE(event.error().message().find("SIGKILL"), std::string::npos) << event.error().message();
}

TEST_F(StubProcessTest, ExitCommandEndsTheStub) {
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, stub_.pid(), 0)));
  stub_.Post(FLURRY_STUB_CMD_EXIT);
  ASSERT_TRUE(WaitForExit(pidfd.get()));
  siginfo_t info{};
  ASSERT_EQ(waitid(P_PIDFD, static_cast<id_t>(pidfd.get()), &info, WEXITED | WNOWAIT), 0);
  EXPECT_EQ(info.si_code, CLD_EXITED);
  EXPECT_EQ(info.si_status, 0);
}

// The stub ends itself (exit status 1, from its liveness check) when the thread holding its
// VMM-alive lock dies — here a thread, so the launching thread (whose death would kill the
// stub through PR_SET_PDEATHSIG) stays alive.
// A VMM killed outright (no destructor, no exit handler runs) still takes its stub along: the
// kernel marks the stub's VMM-alive word.
TEST(StubProcess, EndsWhenItsDrivingProcessIsKilled) {
  auto stub = StubProcess::Launch(TestLayout());
  ASSERT_TRUE(stub.has_value()) << stub.error().message();
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, stub->pid(), 0)));
  int ready[2];
  ASSERT_EQ(pipe(ready), 0);
  const pid_t driver = fork();
  ASSERT_GE(driver, 0);
  if (driver == 0) {
    if (!stub->Adopt()) _exit(1);
    (void)!write(ready[1], "r", 1);
    for (;;) pause();
  }
  char c;
  ASSERT_EQ(read(ready[0], &c, 1), 1);
  kill(driver, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(driver, &status, 0), driver);
  close(ready[0]);
  close(ready[1]);
  ASSERT_TRUE(WaitForExit(pidfd.get())) << "the stub outlived its killed VMM";
  siginfo_t info{};
  ASSERT_EQ(waitid(P_PIDFD, static_cast<id_t>(pidfd.get()), &info, WEXITED | WNOWAIT), 0);
  EXPECT_EQ(info.si_code, CLD_EXITED);
  EXPECT_EQ(info.si_status, 1);
}

// A stub ends when the process that adopted it exits.
TEST(StubProcess, EndsWhenItsDrivingProcessDies) {
  auto stub = StubProcess::Launch(TestLayout());
  ASSERT_TRUE(stub.has_value()) << stub.error().message();
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, stub->pid(), 0)));
  const pid_t driver = fork();
  ASSERT_GE(driver, 0);
  if (driver == 0) _exit(stub->Adopt().has_value() ? 0 : 1);
  int status = 0;
  ASSERT_EQ(waitpid(driver, &status, 0), driver);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  ASSERT_TRUE(WaitForExit(pidfd.get())) << "the stub outlived its VMM process";
  siginfo_t info{};
  ASSERT_EQ(waitid(P_PIDFD, static_cast<id_t>(pidfd.get()), &info, WEXITED | WNOWAIT), 0);
  EXPECT_EQ(info.si_code, CLD_EXITED);
  EXPECT_EQ(info.si_status, 1);
}

}  // namespace
}  // namespace flurry
