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
#include "memory/guest_memory.h"

namespace flurry {

extern const uint8_t kStubImage[];
extern const size_t kStubImage_size;

namespace {

constexpr uint64_t kRam = 16 << 20;
constexpr uint64_t kCode = 2 << 20;   // guest code goes here
constexpr uint64_t kData = 3 << 20;   // a data word the guest reads
constexpr uint64_t kStack = 8 << 20;  // initial RSP
constexpr uint64_t kGuard = 12 << 20;

GuestLayout TestLayout() {
  GuestLayout layout;
  layout.ram_size = kRam;
  layout.guard_start = kGuard;  // [12 MiB, 14 MiB) stays unmapped
  return layout;
}

// The pids of `pid`'s children (those of its main thread).
std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t child; in >> child;) out.push_back(child);
  return out;
}

// Waits (up to 10 s) for the process behind `pidfd` to end. True if it did.
bool WaitForExit(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  return poll(&p, 1, 10'000) == 1;
}

void SetRegs(volatile flurry_stub_regs& r, uint64_t rip) {
  for (volatile uint64_t* reg :
       {&r.rax, &r.rbx, &r.rcx, &r.rdx, &r.rsi, &r.rdi, &r.rbp, &r.r8, &r.r9, &r.r10, &r.r11,
        &r.r12, &r.r13, &r.r14, &r.r15, &r.fs_base, &r.gs_base}) {
    *reg = 0;
  }
  r.rsp = kStack;
  r.rip = rip;
  r.rflags = 0x202;
}

// Machine code.
const std::vector<uint8_t> kGetpidThenExitWithRax = {
    0xb8, 0x27, 0x00, 0x00, 0x00,  // mov $39, %eax   (getpid)
    0x0f, 0x05,                    // syscall
    0x48, 0x89, 0xc7,              // mov %rax, %rdi
    0xb8, 0x3c, 0x00, 0x00, 0x00,  // mov $60, %eax   (exit)
    0x0f, 0x05,                    // syscall
};
const std::vector<uint8_t> kExitWithData = {
    0x48, 0x8b, 0x3c, 0x25, 0x00, 0x00, 0x30, 0x00,  // mov 0x300000, %rdi
    0xb8, 0x3c, 0x00, 0x00, 0x00,                    // mov $60, %eax
    0x0f, 0x05,                                      // syscall
};

class StubProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto stub = StubProcess::Launch(TestLayout());
    ASSERT_TRUE(stub.has_value()) << stub.error().message();
    stub_ = std::move(*stub);
    ASSERT_TRUE(stub_.valid());
    EXPECT_EQ(stub_.shared().turn, FLURRY_STUB_TURN_VMM);
    EXPECT_EQ(stub_.shared().event, FLURRY_STUB_EVENT_READY);
    ASSERT_TRUE(stub_.Adopt().has_value());
    memory_.emplace(OpenMemory(stub_));
    deadline_.emplace(stub_.pid());
  }
  void TearDown() override { deadline_.reset(); }

  static GuestMemory OpenMemory(const StubProcess& stub) {
    return GuestMemory::Remote(kRam, stub.OpenProc("mem").value(), stub.OpenProc("pagemap").value(),
                               nullptr);
  }

  // Loads registers to run `code` (placed at kCode) and resumes; returns the next event.
  uint32_t RunCode(StubProcess& stub, const GuestMemory& memory, const std::vector<uint8_t>& code,
                   uint32_t extra_flags = 0) {
    EXPECT_TRUE(memory.Write(kCode, code.data(), code.size()).has_value());
    SetRegs(stub.shared().regs, kCode);
    return Resume(stub, FLURRY_STUB_LOAD_REGS | extra_flags);
  }
  static uint32_t Resume(StubProcess& stub, uint32_t flags) {
    stub.shared().resume_flags = flags;
    stub.Post(FLURRY_STUB_CMD_RESUME);
    auto event = stub.Wait();
    EXPECT_TRUE(event.has_value()) << event.error().message();
    return event.value_or(0);
  }

  const GuestMemory& mem() const { return *memory_; }

  StubProcess stub_;
  std::optional<GuestMemory> memory_;
  std::optional<StubDeadline> deadline_;
};

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
  EXPECT_TRUE(WaitForExit(child_pidfd.get()));
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

// ---- lanes ------------------------------------------------------------------------------------

// The address of `name` in the stub's image (its symbol table), 0 if absent.
uint64_t StubSymbol(const char* name) {
  const uint8_t* image = kStubImage;
  Elf64_Ehdr eh;
  std::memcpy(&eh, image, sizeof eh);
  for (int i = 0; i < eh.e_shnum; ++i) {
    Elf64_Shdr sh;
    std::memcpy(&sh, image + eh.e_shoff + i * sizeof sh, sizeof sh);
    if (sh.sh_type != SHT_SYMTAB) continue;
    Elf64_Shdr strtab;
    std::memcpy(&strtab, image + eh.e_shoff + sh.sh_link * sizeof strtab, sizeof strtab);
    for (uint64_t off = 0; off + sizeof(Elf64_Sym) <= sh.sh_size; off += sizeof(Elf64_Sym)) {
      Elf64_Sym sym;
      std::memcpy(&sym, image + sh.sh_offset + off, sizeof sym);
      const char* sym_name = reinterpret_cast<const char*>(image + strtab.sh_offset + sym.st_name);
      if (std::strcmp(sym_name, name) == 0) return sym.st_value;
    }
  }
  return 0;
}

constexpr uint64_t kCode1 = kCode + 0x1000;  // lane 1's code
constexpr uint64_t kStack1 = kStack - 0x10000;

// Lane 0: waits (spinning, no syscall) until the word at kData is 1, then getpid.
const std::vector<uint8_t> kWaitForFlag = {
    0x48, 0x83, 0x3c, 0x25, 0x00, 0x00, 0x30, 0x00, 0x01,  // cmpq $1, 0x300000
    0x75, 0xf5,                                            // jne (back to the cmpq)
    0xb8, 0x27, 0x00, 0x00, 0x00,                          // mov $39, %eax
    0x0f, 0x05,                                            // syscall
};
// Lane 1: spins a little, sets the word at kData to 1, then gettid.
const std::vector<uint8_t> kSetFlag = {
    0xb9, 0x00, 0x00, 0x10, 0x00,                                   // mov $0x100000, %ecx
    0xff, 0xc9,                                                     // dec %ecx
    0x75, 0xfc,                                                     // jnz (back to dec)
    0x48, 0xc7, 0x04, 0x25, 0x00, 0x00, 0x30, 0x00, 0x01, 0, 0, 0,  // movq $1, 0x300000
    0xb8, 0xba, 0x00, 0x00, 0x00,                                   // mov $186, %eax
    0x0f, 0x05,                                                     // syscall
};

class StubLanesTest : public StubProcessTest {
 protected:
  void SetUp() override {
    StubProcessTest::SetUp();
    if (HasFatalFailure()) return;
    auto added = stub_.AddLane(0, 1);
    ASSERT_TRUE(added.has_value()) << added.error().message();
    ASSERT_TRUE(stub_.LaneExists(1));
    EXPECT_EQ(stub_.lanes(), 3u);
    EXPECT_EQ(stub_.shared(1).turn, FLURRY_STUB_TURN_VMM);
    EXPECT_EQ(stub_.shared(1).event, FLURRY_STUB_EVENT_READY);
  }
  // Loads lane `lane` to run `code` at `at` with stack `sp` and resumes it (no wait).
  void Start(int lane, uint64_t at, uint64_t sp, const std::vector<uint8_t>& code) {
    ASSERT_TRUE(mem().Write(at, code.data(), code.size()).has_value());
    SetRegs(stub_.shared(lane).regs, at);
    stub_.shared(lane).regs.rsp = sp;
    stub_.shared(lane).resume_flags = FLURRY_STUB_LOAD_REGS;
    stub_.Post(lane, FLURRY_STUB_CMD_RESUME);
  }
};

// Lane 0 waits for a flag only lane 1 sets, without any syscall in between: with one lane
// running at a time, lane 0 would spin forever (the StubDeadline would kill the stub).
TEST_F(StubLanesTest, TwoLanesRunGuestCodeInParallel) {
  ASSERT_TRUE(mem().WriteObject<uint64_t>(kData, 0).has_value());
  Start(0, kCode, kStack, kWaitForFlag);
  Start(1, kCode1, kStack1, kSetFlag);
  std::set<int> seen;
  StubProcess::LaneSet running = stub_.lanes();
  for (int i = 0; i < 2; ++i) {
    auto stop = stub_.WaitAny(running);
    ASSERT_TRUE(stop.has_value()) << stop.error().message();
    const auto [lane, event] = *stop;
    EXPECT_EQ(event, FLURRY_STUB_EVENT_SYSCALL);
    EXPECT_TRUE(seen.insert(lane).second) << "lane " << lane << " returned twice";
    running &= ~StubProcess::LaneBit(lane);
    volatile flurry_stub_shared& s = stub_.shared(lane);
    if (lane == 0) {
      EXPECT_EQ(s.syscall_nr, 39u);
      EXPECT_EQ(s.regs.rip, kCode + kWaitForFlag.size());
      EXPECT_EQ(s.regs.rsp, kStack);
    } else {
      EXPECT_EQ(s.syscall_nr, 186u);
      EXPECT_EQ(s.regs.rip, kCode1 + kSetFlag.size());
      EXPECT_EQ(s.regs.rsp, kStack1);
    }
  }
  EXPECT_EQ(seen, (std::set<int>{0, 1}));
  // Each lane goes on with its own answer.
  stub_.shared(0).regs.rax = 1000;
  stub_.shared(1).regs.rax = 1001;
  const std::vector<uint8_t> exit_with_rax = {0x48, 0x89, 0xc7, 0xb8, 0x3c, 0, 0, 0, 0x0f, 0x05};
  ASSERT_TRUE(mem().Write(kCode + kWaitForFlag.size(), exit_with_rax.data(), exit_with_rax.size()));
  ASSERT_TRUE(mem().Write(kCode1 + kSetFlag.size(), exit_with_rax.data(), exit_with_rax.size()));
  for (int lane : {0, 1}) {
    stub_.shared(lane).resume_flags = FLURRY_STUB_LOAD_REGS;
    stub_.Post(lane, FLURRY_STUB_CMD_RESUME);
  }
  for (int lane : {1, 0}) {
    auto event = stub_.Wait(lane);
    ASSERT_TRUE(event.has_value()) << event.error().message();
    EXPECT_EQ(*event, FLURRY_STUB_EVENT_SYSCALL);
    EXPECT_EQ(stub_.shared(lane).syscall_nr, 60u);
    EXPECT_EQ(stub_.shared(lane).regs.rdi, 1000u + lane);
  }
}

// A stop that came while the VMM looked at another lane is returned without waiting, and the
// lanes take turns.
TEST_F(StubLanesTest, WaitAnyTakesTurns) {
  Start(0, kCode, kStack, kGetpidThenExitWithRax);
  Start(1, kCode1, kStack1, kGetpidThenExitWithRax);
  ASSERT_TRUE(stub_.Wait(0).has_value());
  ASSERT_TRUE(stub_.Wait(1).has_value());
  auto first = stub_.WaitAny(stub_.lanes());
  ASSERT_TRUE(first.has_value());
  auto again = stub_.WaitAny(stub_.lanes());
  ASSERT_TRUE(again.has_value());
  EXPECT_NE(first->first, again->first);
  EXPECT_FALSE(stub_.WaitAny(StubProcess::LaneBit(5)).has_value());  // no such lane
}

TEST_F(StubLanesTest, KickStopsOneRunningLaneAtATime) {
  ASSERT_TRUE(mem().Write(kCode, "\xeb\xfe", 2).has_value());  // jmp .
  Start(0, kCode, kStack, {0xeb, 0xfe});
  Start(1, kCode1, kStack1, {0xeb, 0xfe});
  stub_.Kick();
  auto stop = stub_.WaitAny(stub_.lanes());
  ASSERT_TRUE(stop.has_value()) << stop.error().message();
  EXPECT_EQ(stop->second, FLURRY_STUB_EVENT_KICKED);
  const int first = stop->first;
  EXPECT_EQ(stub_.shared(first).regs.rip, first == 0 ? kCode : kCode1);
  // The other one still runs; a second kick stops it.
  stub_.Kick();
  const int other = 1 - first;
  auto event = stub_.Wait(other);
  ASSERT_TRUE(event.has_value()) << event.error().message();
  EXPECT_EQ(*event, FLURRY_STUB_EVENT_KICKED);
  EXPECT_EQ(stub_.shared(other).regs.rip, other == 0 ? kCode : kCode1);
}

TEST_F(StubLanesTest, AddLaneRefusesBadNumbers) {
  EXPECT_FALSE(stub_.AddLane(0, 0).has_value());
  EXPECT_FALSE(stub_.AddLane(0, 1).has_value());  // exists
  EXPECT_FALSE(stub_.AddLane(0, FLURRY_STUB_MAX_LANES).has_value());
  EXPECT_FALSE(stub_.AddLane(0, -1).has_value());
  EXPECT_FALSE(stub_.AddLane(7, 2).has_value());  // from a lane that does not exist
  // The stub checks too (a VMM bug, or a forged page, must not start a thread twice).
  volatile flurry_stub_shared& s = stub_.shared(1);
  s.args[0] = 1;
  EXPECT_EQ(stub_.Command(1, FLURRY_STUB_CMD_ADD_LANE).value(), -EEXIST);
  s.args[0] = 0;
  EXPECT_EQ(stub_.Command(1, FLURRY_STUB_CMD_ADD_LANE).value(), -EINVAL);
  s.args[0] = FLURRY_STUB_MAX_LANES;
  EXPECT_EQ(stub_.Command(1, FLURRY_STUB_CMD_ADD_LANE).value(), -EINVAL);
  // A new lane from lane 1.
  ASSERT_TRUE(stub_.AddLane(1, 2).has_value());
  EXPECT_EQ(stub_.lanes(), 7u);
  // All of them work.
  Start(2, kCode, kStack, kGetpidThenExitWithRax);
  ASSERT_EQ(stub_.Wait(2).value(), FLURRY_STUB_EVENT_SYSCALL);
  EXPECT_EQ(stub_.shared(2).syscall_nr, 39u);
}

// The fork token goes only through a lane's page while no other thread may run guest code:
// once a lane has been resumed, no lane is added to the batch.
TEST_F(StubLanesTest, AddLaneAfterALaneRanIsRefused) {
  Start(1, kCode1, kStack1, kGetpidThenExitWithRax);
  ASSERT_EQ(stub_.Wait(1).value(), FLURRY_STUB_EVENT_SYSCALL);
  EXPECT_EQ(stub_.resumed(), StubProcess::LaneBit(1));
  for (int from : {0, 1}) {
    auto refused = stub_.AddLane(from, 2);
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().message().find("in one batch"), std::string::npos)
        << refused.error().message();
    EXPECT_FALSE(stub_.LaneExists(2));
    EXPECT_EQ(stub_.shared(from).args[1], 0u);  // no token was written
  }
  EXPECT_EQ(stub_.lanes(), 3u);
  EXPECT_EQ(stub_.ThreadCount().value(), 2);
}

// A lane the VMM never resumed may run guest code all the same: guest code on another lane
// posts the RESUME on its page (here the test writes what lane 0's guest code could). So the
// commanding lane must not have run either once the batch started.
TEST_F(StubLanesTest, AGuestCanResumeALaneItself) {
  ASSERT_TRUE(mem().WriteObject<uint64_t>(kData, 0).has_value());
  Start(0, kCode, kStack, kGetpidThenExitWithRax);
  ASSERT_EQ(stub_.Wait(0).value(), FLURRY_STUB_EVENT_SYSCALL);
  // "Guest code" on lane 0 starts lane 1: movq $1, kData; jmp .
  const std::vector<uint8_t> set_flag = {0x48, 0xc7, 0x04, 0x25, 0x00, 0x00, 0x30,
                                         0x00, 0x01, 0,    0,    0,    0xeb, 0xfe};
  ASSERT_TRUE(mem().Write(kCode1, set_flag.data(), set_flag.size()).has_value());
  volatile flurry_stub_shared& page1 = stub_.shared(1);
  SetRegs(page1.regs, kCode1);
  page1.regs.rsp = kStack1;
  page1.resume_flags = FLURRY_STUB_LOAD_REGS;
  page1.command = FLURRY_STUB_CMD_RESUME;
  __atomic_store_n(&page1.turn, FLURRY_STUB_TURN_STUB, __ATOMIC_SEQ_CST);
  for (int i = 0; i < 5000 && mem().ReadObject<uint64_t>(kData).value_or(0) != 1; ++i) {
    usleep(1000);
  }
  ASSERT_EQ(mem().ReadObject<uint64_t>(kData).value(), 1u);  // lane 1 runs guest code
  EXPECT_EQ(stub_.resumed(), StubProcess::LaneBit(0));       // unknown to the VMM
  auto refused = stub_.AddLane(0, 2);
  ASSERT_FALSE(refused.has_value());
  EXPECT_NE(refused.error().message().find("in one batch"), std::string::npos)
      << refused.error().message();
  EXPECT_EQ(stub_.shared(0).args[1], 0u);
}

// Before any lane runs, a batch can grow from any lane; the lone lane that starts a batch may
// have run before.
TEST_F(StubLanesTest, ABatchGrowsUntilALaneRuns) {
  ASSERT_TRUE(stub_.AddLane(1, 2).has_value());
  ASSERT_TRUE(stub_.AddLane(0, 3).has_value());
  EXPECT_EQ(stub_.ThreadCount().value(), 4);
  Start(3, kCode, kStack, kGetpidThenExitWithRax);
  ASSERT_EQ(stub_.Wait(3).value(), FLURRY_STUB_EVENT_SYSCALL);
  EXPECT_FALSE(stub_.AddLane(0, 4).has_value());
  ASSERT_TRUE(stub_.EndOtherLanes(0).has_value());
  Start(0, kCode, kStack, kGetpidThenExitWithRax);  // lane 0, alone, runs
  ASSERT_EQ(stub_.Wait(0).value(), FLURRY_STUB_EVENT_SYSCALL);
  ASSERT_TRUE(stub_.AddLane(0, 3).has_value());  // and starts a new batch
  ASSERT_TRUE(stub_.AddLane(3, 1).has_value());
  EXPECT_EQ(stub_.lanes(), 0b1011u);
  EXPECT_EQ(stub_.ThreadCount().value(), 3);
}

TEST(StubProcessThreads, ParsesTheThreadCount) {
  EXPECT_EQ(StubProcess::ParseThreadCount("Name:\tx\nThreads:\t3\nSigQ:\t0/1\n").value(), 3);
  EXPECT_EQ(StubProcess::ParseThreadCount("Threads:\t12\n").value(), 12);
  EXPECT_EQ(StubProcess::ParseThreadCount("Name:\tx\nThreads: 16").value(), 16);
  EXPECT_FALSE(StubProcess::ParseThreadCount("").has_value());
  EXPECT_FALSE(StubProcess::ParseThreadCount("Name:\tThreads:\t2\n").has_value());
  EXPECT_FALSE(StubProcess::ParseThreadCount("Name:\tx\nXThreads:\t2\n").has_value());
  EXPECT_FALSE(StubProcess::ParseThreadCount("Threads:\t\n").has_value());
  EXPECT_FALSE(StubProcess::ParseThreadCount("Threads:\t3x\n").has_value());
  EXPECT_FALSE(StubProcess::ParseThreadCount("Threads:\t-3\n").has_value());
  EXPECT_FALSE(StubProcess::ParseThreadCount("Threads:\t99999999999999\n").has_value());
}

}  // namespace

// Makes the VMM's view of a stub lose a lane whose thread still runs: to the kernel's count,
// the stub then has a thread the VMM did not make.
class StubProcessTestPeer {
 public:
  static void ForgetLane(StubProcess& stub, int lane) {
    stub.lanes_ &= ~StubProcess::LaneBit(lane);
  }
};

namespace {

TEST_F(StubLanesTest, ThreadsTheVmmDidNotMakeStopTheToken) {
  ASSERT_TRUE(stub_.AddLane(0, 2).has_value());
  EXPECT_EQ(stub_.ThreadCount().value(), 3);
  StubProcessTestPeer::ForgetLane(stub_, 2);
  auto added = stub_.AddLane(0, 3);
  ASSERT_FALSE(added.has_value());
  EXPECT_NE(added.error().message().find("threads the VMM did not make"), std::string::npos)
      << added.error().message();
  EXPECT_FALSE(stub_.LaneExists(3));
  EXPECT_EQ(stub_.shared(0).args[0], 2u);  // the last AddLane's: no command was sent
  EXPECT_EQ(stub_.shared(0).args[1], 0u);
  // Fork too: to the VMM lane 0 is alone, to the kernel it is not.
  StubProcessTestPeer::ForgetLane(stub_, 1);
  const uint64_t before = stub_.shared(0).args[0];
  auto forked = stub_.Fork(0, /*die_with_parent=*/true);
  ASSERT_FALSE(forked.has_value());
  EXPECT_NE(forked.error().message().find("threads the VMM did not make"), std::string::npos)
      << forked.error().message();
  EXPECT_EQ(stub_.shared(0).args[0], before);  // no token was written
  EXPECT_TRUE(ChildrenOf(stub_.pid()).empty());
}

// Fork needs the stub to have one lane and one thread; EndOtherLanes gets it there (from lane 0,
// the main thread, only). The ended lanes' numbers are free again: a new batch can start.
TEST_F(StubLanesTest, ForkNeedsTheOtherLanesEnded) {
  Start(1, kCode1, kStack1, kGetpidThenExitWithRax);
  ASSERT_EQ(stub_.Wait(1).value(), FLURRY_STUB_EVENT_SYSCALL);
  for (int lane : {0, 1}) {
    const uint64_t before = stub_.shared(lane).args[0];
    auto refused = stub_.Fork(lane, /*die_with_parent=*/true);
    ASSERT_FALSE(refused.has_value());
    EXPECT_NE(refused.error().message().find("end the other lanes first"), std::string::npos)
        << refused.error().message();
    EXPECT_EQ(stub_.shared(lane).args[0], before);  // no token was written
  }
  // Lane 0 is the main thread: it does not end (the others are ended from it).
  auto from_one = stub_.EndOtherLanes(1);
  ASSERT_FALSE(from_one.has_value());
  EXPECT_NE(from_one.error().message().find("main thread"), std::string::npos);
  EXPECT_EQ(stub_.lanes(), 3u);
  EXPECT_EQ(stub_.ThreadCount().value(), 2);
  // The stub refuses too (a forged page must not end the main thread).
  EXPECT_EQ(stub_.Command(0, FLURRY_STUB_CMD_END_LANE).value(), -EINVAL);

  ASSERT_TRUE(stub_.EndOtherLanes(0).has_value());
  EXPECT_EQ(stub_.lanes(), 1u);
  EXPECT_EQ(stub_.resumed(), 0u);
  EXPECT_EQ(stub_.ThreadCount().value(), 1);
  EXPECT_FALSE(stub_.Wait(1).has_value());  // no lane 1 any more

  auto forked = stub_.Fork(0, /*die_with_parent=*/true);
  ASSERT_TRUE(forked.has_value()) << forked.error().message();
  StubProcess child = std::move(*forked);
  StubDeadline child_deadline(child.pid());
  EXPECT_EQ(child.lanes(), StubProcess::LaneBit(0));
  EXPECT_EQ(child.ThreadCount().value(), 1);
  EXPECT_EQ(child.shared(0).event, FLURRY_STUB_EVENT_FORKED);
  EXPECT_EQ(child.shared(0).ram_size, kRam);  // the setup block
  EXPECT_EQ(stub_.shared(0).result, child.pid());
  EXPECT_EQ(stub_.shared(0).args[0], 0u);  // the token is gone from the page
  ASSERT_TRUE(child.Adopt().has_value());
  EXPECT_FALSE(child.Wait(1).has_value());  // no lane 1 in the child
  // A new lane in the child, which runs.
  ASSERT_TRUE(child.AddLane(0, 1).has_value());
  GuestMemory child_mem = OpenMemory(child);
  ASSERT_TRUE(
      child_mem.Write(kCode1, kGetpidThenExitWithRax.data(), kGetpidThenExitWithRax.size()));
  SetRegs(child.shared(1).regs, kCode1);
  child.shared(1).resume_flags = FLURRY_STUB_LOAD_REGS;
  child.Post(1, FLURRY_STUB_CMD_RESUME);
  ASSERT_EQ(child.Wait(1).value(), FLURRY_STUB_EVENT_SYSCALL);
  EXPECT_EQ(child.shared(1).syscall_nr, 39u);

  // The parent: lane 1's page as the ended thread left it (and some junk); a new lane 1 starts
  // cleanly all the same.
  volatile flurry_stub_shared& stale = stub_.shared(1);
  stale.turn = FLURRY_STUB_TURN_VMM;
  stale.event = FLURRY_STUB_EVENT_SYSCALL;
  stale.stub_waiting = 1;
  stale.vmm_waiting = 1;
  stale.command = FLURRY_STUB_CMD_EXIT;
  ASSERT_TRUE(stub_.AddLane(0, 1).has_value());
  ASSERT_TRUE(stub_.AddLane(0, 2).has_value());
  EXPECT_EQ(stub_.ThreadCount().value(), 3);
  ASSERT_TRUE(mem().WriteObject<uint64_t>(kData, 0).has_value());
  Start(0, kCode, kStack, kWaitForFlag);
  Start(1, kCode1, kStack1, kSetFlag);
  Start(2, kCode1 + 0x800, kStack1 - 0x10000, kGetpidThenExitWithRax);
  std::set<int> seen;
  for (int i = 0; i < 3; ++i) {
    auto stop = stub_.WaitAny(stub_.lanes() & ~[&] {
      StubProcess::LaneSet s = 0;
      for (int l : seen) s |= StubProcess::LaneBit(l);
      return s;
    }());
    ASSERT_TRUE(stop.has_value()) << stop.error().message();
    EXPECT_EQ(stop->second, FLURRY_STUB_EVENT_SYSCALL);
    EXPECT_TRUE(seen.insert(stop->first).second);
  }
  EXPECT_EQ(stub_.shared(0).syscall_nr, 39u);
  EXPECT_EQ(stub_.shared(1).syscall_nr, 186u);
  EXPECT_EQ(stub_.shared(2).syscall_nr, 39u);
}

// A guest that ends its own lane's thread (exit, from the stub's site) hurts only itself: the
// kernel's count no longer matches, and EndOtherLanes still gets the stub to one thread.
TEST_F(StubLanesTest, AGuestEndingItsOwnThreadIsNoticed) {
  const uint64_t site = StubSymbol("flurry_stub_syscall_insn");
  ASSERT_NE(site, 0u);
  std::vector<uint8_t> code = {
      0xb8, 0x3c, 0x00, 0x00, 0x00,  // mov $60, %eax (exit: this thread)
      0x31, 0xff,                    // xor %edi, %edi
      0x48, 0xbb,                    // mov $site, %rbx
  };
  for (int i = 0; i < 8; ++i) code.push_back(static_cast<uint8_t>(site >> (8 * i)));
  code.insert(code.end(), {0xff, 0xd3, 0x0f, 0x0b});  // call *%rbx; ud2
  Start(1, kCode1, kStack1, code);
  for (int i = 0; i < 2000; ++i) {
    if (stub_.ThreadCount().value_or(0) == 1) break;
    usleep(1000);
  }
  EXPECT_EQ(stub_.ThreadCount().value(), 1);
  auto refused = stub_.Fork(0, /*die_with_parent=*/true);
  EXPECT_FALSE(refused.has_value());
  ASSERT_TRUE(stub_.EndOtherLanes(0).has_value());
  auto forked = stub_.Fork(0, /*die_with_parent=*/true);
  ASSERT_TRUE(forked.has_value()) << forked.error().message();
}

// The guest calls the stub's own syscall site: clone with exactly a new lane's thread flags,
// but without the fork token. The filter kills the stub.
TEST_F(StubLanesTest, LaneCloneWithoutTheTokenIsKilled) {
  const uint64_t site = StubSymbol("flurry_stub_syscall_insn");
  ASSERT_NE(site, 0u);
  std::vector<uint8_t> code = {
      0xb8, 0x38, 0x00, 0x00, 0x00,                                // mov $56, %eax (clone)
      0xbf, 0x00, 0x0f, 0x05, 0x00,                                // mov $0x50f00, %edi
      0x31, 0xf6,                                                  // xor %esi, %esi
      0x31, 0xd2,                                                  // xor %edx, %edx
      0x4d, 0x31, 0xd2,                                            // xor %r10, %r10
      0x49, 0xb8, 0xef, 0xcd, 0xab, 0x90, 0x78, 0x56, 0x34, 0x12,  // mov $0x1234567890abcdef, %r8
      0x48, 0xbb,                                                  // mov $site, %rbx
  };
  for (int i = 0; i < 8; ++i) code.push_back(static_cast<uint8_t>(site >> (8 * i)));
  code.insert(code.end(), {0xff, 0xd3});  // call *%rbx
  code.insert(code.end(), {0x0f, 0x0b});  // ud2 (never reached)
  static_assert(FLURRY_STUB_LANE_CLONE_FLAGS == 0x50f00u);
  Start(1, kCode1, kStack1, code);
  auto event = stub_.Wait(1);
  ASSERT_FALSE(event.has_value()) << "the stub survived: event " << *event;
  EXPECT_NE(event.error().message().find("SIGSYS"), std::string::npos) << event.error().message();
}

}  // namespace
}  // namespace flurry
