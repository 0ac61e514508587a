// The stub's lanes: several stub threads running guest code at once, adding and ending them,
// and the fork token's rules (docs/protocols/stub.md, "Lanes", "The fork token").
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
#include "backend/seccomp/stub_process.h"
#include "backend/seccomp/stub_process_test_fixture.h"
#include "memory/guest_memory.h"

namespace flurry {

extern const uint8_t kStubImage[];
extern const size_t kStubImage_size;

namespace {

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
