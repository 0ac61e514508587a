// The thread syscalls' decisions (what the VMM then carries out is tested end to end in
// tests/integration/threads_test.cc).
#include <gtest/gtest.h>
#include <linux/futex.h>
#include <linux/sched.h>

#include "guest/syscalls_test_support.h"

namespace flurry {
namespace {

using testing::SyscallHarness;

constexpr uint64_t kPthreadFlags = CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND |
                                   CLONE_THREAD | CLONE_SYSVSEM | CLONE_SETTLS |
                                   CLONE_PARENT_SETTID | CLONE_CHILD_CLEARTID;

TEST(SysClone, ThreadFlagsMakeAThreadAndWriteItsTid) {
  SyscallHarness h;
  constexpr uint64_t kBuf = SyscallHarness::kScratch;
  const int64_t tid = h.Call(SYS_clone, kPthreadFlags, 0x2000000, kBuf, kBuf + 8, 0x1234000);
  EXPECT_EQ(tid, 43);  // after the pid
  EXPECT_EQ(h.memory.ReadObject<int32_t>(kBuf).value(), 43);
  ASSERT_TRUE(h.state.threads.spawn.has_value());
  const ThreadSpawn& spawn = *h.state.threads.spawn;
  EXPECT_EQ(spawn.tid, 43);
  EXPECT_EQ(spawn.stack, 0x2000000u);
  EXPECT_TRUE(spawn.set_tls);
  EXPECT_EQ(spawn.tls, 0x1234000u);
  EXPECT_EQ(spawn.clear_child_tid, kBuf + 8);
  EXPECT_EQ(h.state.threads.last_tid, 43);
}

TEST(SysClone, ProcessesAndBadFlagCombinationsAreRefused) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_clone, SIGCHLD), -ENOSYS);  // fork: no process table (a unit test)
  EXPECT_EQ(h.Call(SYS_clone, CLONE_THREAD | CLONE_VM), -EINVAL);
  EXPECT_EQ(h.Call(SYS_clone, CLONE_SIGHAND | CLONE_THREAD), -EINVAL);
  EXPECT_EQ(h.Call(SYS_clone, kPthreadFlags | CLONE_NEWNS), -EINVAL);
  EXPECT_EQ(h.Call(SYS_clone, kPthreadFlags, 0, 0, 0, 1ULL << 47), -EPERM);  // TLS not canonical
  EXPECT_EQ(h.Call(SYS_clone, kPthreadFlags, 0, 0x10, 0, 0), -EFAULT);       // parent_tid
  EXPECT_FALSE(h.state.threads.spawn.has_value());
  EXPECT_EQ(h.Call(SYS_fork), -ENOSYS);
}

TEST(SysClone3, ReadsCloneArgsAndChecksThem) {
  SyscallHarness h;
  constexpr uint64_t kArgs = SyscallHarness::kScratch;
  constexpr uint64_t kTid = kArgs + 0x200;
  uint64_t args[11] = {};
  args[0] = kPthreadFlags & ~uint64_t{CLONE_PARENT_SETTID};
  args[2] = kTid;      // child_tid
  args[5] = 0x100000;  // stack
  args[6] = 0x10000;   // stack_size
  args[7] = 0x5000;    // tls
  ASSERT_TRUE(h.memory.Write(kArgs, args, sizeof args).has_value());
  EXPECT_EQ(h.Call(SYS_clone3, kArgs, 88), 43);
  ASSERT_TRUE(h.state.threads.spawn.has_value());
  EXPECT_EQ(h.state.threads.spawn->stack, 0x110000u);  // the stack's top
  EXPECT_EQ(h.state.threads.spawn->clear_child_tid, kTid);
  h.state.threads.spawn.reset();
  EXPECT_EQ(h.Call(SYS_clone3, kArgs, 32), -EINVAL);  // smaller than version 0
  EXPECT_EQ(h.Call(SYS_clone3, kArgs, 8192), -E2BIG);
  ASSERT_TRUE(h.memory.WriteObject<uint64_t>(kArgs + 88, 1).has_value());
  EXPECT_EQ(h.Call(SYS_clone3, kArgs, 96), -E2BIG);  // an unknown field in use
  args[4] = SIGCHLD;                                 // exit_signal with CLONE_THREAD
  ASSERT_TRUE(h.memory.Write(kArgs, args, sizeof args).has_value());
  EXPECT_EQ(h.Call(SYS_clone3, kArgs, 88), -EINVAL);
  args[4] = 0;
  args[6] = 0;  // a stack without a size
  ASSERT_TRUE(h.memory.Write(kArgs, args, sizeof args).has_value());
  EXPECT_EQ(h.Call(SYS_clone3, kArgs, 88), -EINVAL);
  EXPECT_EQ(h.Call(SYS_clone3, 0x10, 88), -EFAULT);
  EXPECT_FALSE(h.state.threads.spawn.has_value());
}

GuestThread Running(int32_t tid) {
  GuestThread t;
  t.tid = tid;
  return t;
}

GuestThread ParkedOn(int32_t tid, uint64_t addr) {
  GuestThread t;
  t.tid = tid;
  t.in_syscall = true;
  t.wait = ThreadWait::kFutex;
  t.block.futex_addr = addr;
  t.block.futex_bitset = FUTEX_BITSET_MATCH_ANY;
  t.wait_seq = static_cast<uint64_t>(tid);
  return t;
}

TEST(SysFutex, WaitAmongThreadsParksTheCaller) {
  SyscallHarness h;
  constexpr uint64_t kWord = SyscallHarness::kScratch;
  h.state.threads.others.push_back(Running(50));
  ASSERT_TRUE(h.memory.WriteObject<uint32_t>(kWord, 5).has_value());
  EXPECT_EQ(h.Call(SYS_futex, kWord, FUTEX_WAIT_PRIVATE, 4), -EAGAIN);
  EXPECT_EQ(h.Call(SYS_futex, kWord + 2, FUTEX_WAIT_PRIVATE, 5), -EINVAL);
  h.Call(SYS_futex, kWord, FUTEX_WAIT_PRIVATE, 5);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kBlock);
  ASSERT_TRUE(h.state.threads.block.has_value());
  EXPECT_EQ(h.state.threads.block->futex_addr, kWord);
  EXPECT_EQ(h.state.threads.block->deadline_ns, 0);
  // A relative timeout becomes a deadline; a bitset of 0 is refused.
  const timespec timeout{0, 1000};
  ASSERT_TRUE(h.memory.WriteObject(kWord + 64, timeout).has_value());
  h.Call(SYS_futex, kWord, FUTEX_WAIT_PRIVATE, 5, kWord + 64);
  EXPECT_GT(h.state.threads.block->deadline_ns, 0);
  EXPECT_EQ(h.state.threads.block->expiry_result, -ETIMEDOUT);
  EXPECT_EQ(h.Call(SYS_futex, kWord, FUTEX_WAIT_BITSET_PRIVATE, 5, 0, 0, 0), -EINVAL);
  const timespec bad{0, 1'000'000'000};
  ASSERT_TRUE(h.memory.WriteObject(kWord + 64, bad).has_value());
  EXPECT_EQ(h.Call(SYS_futex, kWord, FUTEX_WAIT_PRIVATE, 5, kWord + 64), -EINVAL);
  EXPECT_EQ(h.Call(SYS_futex, kWord, FUTEX_LOCK_PI_PRIVATE), -ENOSYS);
}

TEST(SysFutex, WakeRequeueAndWakeOpCountThreads) {
  SyscallHarness h;
  constexpr uint64_t kA = SyscallHarness::kScratch;
  constexpr uint64_t kB = kA + 4;
  for (int32_t tid : {60, 61, 62}) h.state.threads.others.push_back(ParkedOn(tid, kA));
  h.state.threads.others.push_back(ParkedOn(63, kB));
  ASSERT_TRUE(h.memory.WriteObject<uint32_t>(kA, 9).has_value());
  EXPECT_EQ(h.Call(SYS_futex, kA, FUTEX_CMP_REQUEUE_PRIVATE, 1, 1, kB, 8), -EAGAIN);
  EXPECT_EQ(h.Call(SYS_futex, kA, FUTEX_CMP_REQUEUE_PRIVATE, 1, 1, kB, 9), 2);  // 1 + 1
  EXPECT_FALSE(h.state.threads.Find(60)->parked());
  EXPECT_EQ(h.state.threads.Find(61)->block.futex_addr, kB);
  EXPECT_EQ(h.state.threads.Find(62)->block.futex_addr, kA);
  // FUTEX_WAKE_OP: *kB += 1 (old 0), wake 1 on kA, and on kB if old == 0.
  ASSERT_TRUE(h.memory.WriteObject<uint32_t>(kB, 0).has_value());
  const uint32_t op = FUTEX_OP(FUTEX_OP_ADD, 1, FUTEX_OP_CMP_EQ, 0);
  EXPECT_EQ(h.Call(SYS_futex, kA, FUTEX_WAKE_OP_PRIVATE, 1, 5, kB, op), 3);  // 62, 61 and 63
  EXPECT_EQ(h.memory.ReadObject<uint32_t>(kB).value(), 1u);
  EXPECT_EQ(h.state.threads.NextRunnable(), 0);
  EXPECT_EQ(h.Call(SYS_futex, kA, FUTEX_WAKE_PRIVATE, 1), 0);
  EXPECT_EQ(h.Call(SYS_futex, kA + 1, FUTEX_WAKE_PRIVATE, 1), -EINVAL);
  EXPECT_EQ(h.Call(SYS_futex, 0x10, FUTEX_WAKE_PRIVATE, 1), -EFAULT);
}

TEST(SysFutex, RequeueWakesExactlyValAndCountsAMoveInPlace) {
  SyscallHarness h;
  constexpr uint64_t kA = SyscallHarness::kScratch;
  for (int32_t tid : {60, 61}) h.state.threads.others.push_back(ParkedOn(tid, kA));
  EXPECT_EQ(h.Call(SYS_futex, kA, FUTEX_REQUEUE_PRIVATE, 0, 1, kA + 4), 1);  // none woken
  EXPECT_TRUE(h.state.threads.Find(60)->parked());
  EXPECT_EQ(h.state.threads.Find(60)->block.futex_addr, kA + 4);
  EXPECT_EQ(h.Call(SYS_futex, kA, FUTEX_REQUEUE_PRIVATE, 0, 5, kA), 1);  // 61, onto itself
  EXPECT_EQ(h.state.threads.Find(61)->block.futex_addr, kA);
}

TEST(SysClone, TidsWrapAtTheLargestPidAndSkipThoseInUse) {
  SyscallHarness h;
  h.state.threads.last_tid = 4'194'303;
  h.state.threads.others.push_back(Running(2));
  h.state.threads.others.push_back(Running(3));
  EXPECT_EQ(h.Call(SYS_clone, kPthreadFlags & ~uint64_t{CLONE_PARENT_SETTID}), 4);
  // The flags are the low 32 bits: an int with bit 31 (CLONE_IO) sign-extended still works.
  h.state.threads.spawn.reset();
  const uint64_t sign_extended =
      0xffffffff00000000ULL | CLONE_IO | CLONE_VM | CLONE_THREAD | CLONE_SIGHAND;
  EXPECT_EQ(h.Call(SYS_clone, sign_extended), 5);
}

TEST(SysExit, AThreadEndsClearingItsTidAndWakingItsJoiner) {
  SyscallHarness h;
  constexpr uint64_t kTid = SyscallHarness::kScratch;
  h.state.threads.others.push_back(ParkedOn(70, kTid));  // pthread_join
  h.state.identity.clear_child_tid = kTid;
  ASSERT_TRUE(h.memory.WriteObject<uint32_t>(kTid, 42).has_value());
  h.Call(SYS_exit, 3);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kExitThread);
  EXPECT_EQ(h.memory.ReadObject<uint32_t>(kTid).value(), 0u);
  EXPECT_FALSE(h.state.threads.Find(70)->parked());
  // The last thread's exit is the process's; exit_group always is.
  h.state.threads.others.clear();
  EXPECT_EQ(h.Call(SYS_exit, 3), 3);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kExit);
  h.state.threads.others.push_back(Running(71));
  EXPECT_EQ(h.Call(SYS_exit_group, 4), 4);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kExit);
}

TEST(SysTgkill, ASignalForAnotherThreadIsPendingForItAlone) {
  SyscallHarness h;
  h.state.threads.others.push_back(Running(80));
  EXPECT_EQ(h.Call(SYS_tgkill, 42, 80, SIGUSR1), 0);
  EXPECT_EQ(h.state.threads.Find(80)->thread_pending, SignalState::Bit(SIGUSR1));
  EXPECT_EQ(h.state.signals.pending | h.state.signals.thread_pending, 0u);
  EXPECT_EQ(h.Call(SYS_tgkill, 42, 81, SIGUSR1), -ESRCH);
  EXPECT_EQ(h.Call(SYS_tgkill, 43, 80, SIGUSR1), -ESRCH);
  EXPECT_EQ(h.Call(SYS_tgkill, 42, 80, 0), 0);
  EXPECT_EQ(h.Call(SYS_tgkill, 42, 80, SIGKILL), 0);  // acts on the whole process
  EXPECT_EQ(h.state.signals.pending, SignalState::Bit(SIGKILL));
  h.state.signals.pending = 0;
  EXPECT_EQ(h.Call(SYS_tkill, 80, SIGUSR2), 0);
  EXPECT_EQ(h.state.threads.Find(80)->thread_pending,
            SignalState::Bit(SIGUSR1) | SignalState::Bit(SIGUSR2));
  EXPECT_EQ(h.Call(SYS_sched_yield), 0);  // 80 can run: the caller lets it
  EXPECT_EQ(h.last.action, SyscallResult::Action::kYield);
  h.state.threads.others[0] = ParkedOn(80, SyscallHarness::kScratch);
  EXPECT_EQ(h.Call(SYS_sched_yield), 0);  // nobody else can run: no switch
  EXPECT_EQ(h.last.action, SyscallResult::Action::kReturn);
}

TEST(SysNanosleep, AmongThreadsParksUntilADeadline) {
  SyscallHarness h;
  constexpr uint64_t kReq = SyscallHarness::kScratch;
  h.state.threads.others.push_back(Running(90));
  const timespec request{1, 0};
  ASSERT_TRUE(h.memory.WriteObject(kReq, request).has_value());
  h.Call(SYS_nanosleep, kReq, kReq + 64);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kBlock);
  ASSERT_TRUE(h.state.threads.block.has_value());
  EXPECT_EQ(h.state.threads.block->wait, ThreadWait::kSleep);
  EXPECT_EQ(h.state.threads.block->remain_addr, kReq + 64);
  EXPECT_EQ(h.state.threads.block->expiry_result, 0);
  EXPECT_GT(h.state.threads.block->deadline_ns, 0);
}

}  // namespace
}  // namespace flurry
