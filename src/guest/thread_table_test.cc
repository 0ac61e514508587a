#include "guest/thread_table.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <cerrno>

namespace flurry {
namespace {

GuestThread Waiter(int32_t tid, uint64_t addr, uint32_t bitset, uint64_t seq,
                   int64_t deadline = 0) {
  GuestThread t;
  t.tid = tid;
  t.in_syscall = true;
  t.syscall_nr = 202;
  t.wait = ThreadWait::kFutex;
  t.block = ThreadBlock{.wait = ThreadWait::kFutex,
                        .futex_addr = addr,
                        .futex_bitset = bitset,
                        .deadline_ns = deadline,
                        .expiry_result = -ETIMEDOUT};
  t.wait_seq = seq;
  return t;
}

TEST(ThreadTable, FutexWakeTakesTheOldestMatchingWaitersFirst) {
  ThreadTable table;
  table.others.push_back(Waiter(11, 0x1000, ~0u, 3));
  table.others.push_back(Waiter(12, 0x1000, 0x1, 1));
  table.others.push_back(Waiter(13, 0x2000, ~0u, 2));
  table.others.push_back(Waiter(14, 0x1000, 0x2, 4));
  EXPECT_EQ(table.NextRunnable(), -1);
  // Bitset 0x1 matches 12 (oldest) and 11, not 14.
  EXPECT_EQ(table.FutexWake(0x1000, 1, 0x1), 1);
  EXPECT_FALSE(table.Find(12)->parked());
  EXPECT_EQ(table.Find(12)->result, 0);
  EXPECT_TRUE(table.Find(11)->parked());
  EXPECT_EQ(table.NextRunnable(), 1);
  EXPECT_EQ(table.FutexWake(0x1000, 10, 0x1), 1);  // 11 only
  EXPECT_TRUE(table.Find(14)->parked());
  EXPECT_TRUE(table.Find(13)->parked());
  EXPECT_EQ(table.FutexWake(0x3000, 10, ~0u), 0);
}

TEST(ThreadTable, RequeueMovesWaitersWithoutWakingThem) {
  ThreadTable table;
  for (int i = 0; i < 4; ++i) table.others.push_back(Waiter(20 + i, 0x1000, ~0u, 10 + i));
  EXPECT_EQ(table.FutexWake(0x1000, 1, ~0u), 1);        // 20
  EXPECT_EQ(table.FutexRequeue(0x1000, 0x2000, 2), 2);  // 21, 22
  EXPECT_EQ(table.Find(21)->block.futex_addr, 0x2000u);
  EXPECT_EQ(table.Find(22)->block.futex_addr, 0x2000u);
  EXPECT_EQ(table.Find(23)->block.futex_addr, 0x1000u);
  EXPECT_TRUE(table.Find(21)->parked());
  EXPECT_EQ(table.FutexWake(0x2000, 5, ~0u), 2);
}

TEST(ThreadTable, DeadlinesWakeWithTheExpiryResult) {
  ThreadTable table;
  table.others.push_back(Waiter(31, 0x1000, ~0u, 1, 500));
  table.others.push_back(Waiter(32, 0x1000, ~0u, 2, 300));
  table.others.push_back(Waiter(33, 0x1000, ~0u, 3));
  EXPECT_EQ(table.EarliestDeadline(), 300);
  EXPECT_EQ(table.WakeExpired(299), 0);
  EXPECT_EQ(table.WakeExpired(300), 1);
  EXPECT_EQ(table.Find(32)->result, -ETIMEDOUT);
  EXPECT_EQ(table.EarliestDeadline(), 500);  // a woken thread's deadline no longer counts
  EXPECT_EQ(table.WakeExpired(1000), 1);
  EXPECT_EQ(table.EarliestDeadline(), 0);
  EXPECT_TRUE(table.Find(33)->parked());
}

TEST(ThreadTable, AnInterruptedWaitCanBeResumed) {
  GuestThread t = Waiter(51, 0x1000, ~0u, 1, 700);
  InterruptThread(t);
  EXPECT_FALSE(t.parked());
  EXPECT_TRUE(t.woken_by_signal);
  EXPECT_EQ(t.result, -EINTR);
  Repark(t);  // its signal went elsewhere: it waits on, deadline and all
  EXPECT_TRUE(t.parked());
  EXPECT_EQ(t.block.futex_addr, 0x1000u);
  EXPECT_EQ(t.block.deadline_ns, 700);
  EXPECT_FALSE(t.woken_by_signal);
}

TEST(ThreadTable, ResumableCpuRestartsAWaitAndKeepsAWakersResult) {
  GuestThread parked = Waiter(41, 0x1000, ~0u, 1);
  parked.cpu.regs.rip = 0x401002;
  parked.cpu.regs.rax = 202;
  x86::UserCpuState cpu = ResumableCpu(parked);
  EXPECT_EQ(cpu.regs.rip, 0x401000u);  // on the syscall instruction
  EXPECT_EQ(cpu.regs.rax, 202u);
  WakeThread(parked, -EINTR);
  cpu = ResumableCpu(parked);
  EXPECT_EQ(cpu.regs.rip, 0x401002u);
  EXPECT_EQ(static_cast<int64_t>(cpu.regs.rax), -EINTR);
  GuestThread running;  // switched out between instructions
  running.cpu.regs.rip = 0x402000;
  running.cpu.regs.rax = 7;
  EXPECT_EQ(ResumableCpu(running), running.cpu);
}

GuestThread FdWaiter(int32_t tid, std::vector<pollfd> fds, int64_t deadline = 0) {
  GuestThread t;
  t.tid = tid;
  t.in_syscall = true;
  t.syscall_nr = 0;  // read
  t.wait = ThreadWait::kFd;
  t.block = ThreadBlock{.wait = ThreadWait::kFd, .deadline_ns = deadline, .expiry_result = 0};
  t.block.poll_fds = std::move(fds);
  return t;
}

TEST(ThreadTable, FdWaitSetListsEachWaitersFdsInTurn) {
  ThreadTable table;
  EXPECT_FALSE(table.WaitsForFds());
  EXPECT_TRUE(table.FdWaitSet().empty());
  table.others.push_back(FdWaiter(61, {{.fd = 5, .events = POLLIN, .revents = 0}}));
  table.others.push_back(Waiter(62, 0x1000, ~0u, 1));
  table.others.push_back(FdWaiter(63, {{.fd = 7, .events = POLLOUT, .revents = POLLOUT},
                                       {.fd = 8, .events = POLLIN, .revents = 0}}));
  GuestThread woken = FdWaiter(64, {{.fd = 9, .events = POLLIN, .revents = 0}});
  WakeThread(woken, 0);  // no longer waiting: not polled
  table.others.push_back(woken);
  EXPECT_TRUE(table.WaitsForFds());
  const std::vector<pollfd> set = table.FdWaitSet();
  ASSERT_EQ(set.size(), 3u);
  EXPECT_EQ(set[0].fd, 5);
  EXPECT_EQ(set[0].events, POLLIN);
  EXPECT_EQ(set[1].fd, 7);
  EXPECT_EQ(set[1].events, POLLOUT);
  EXPECT_EQ(set[1].revents, 0);  // cleared for poll() to fill
  EXPECT_EQ(set[2].fd, 8);
}

TEST(ThreadTable, ReadyFdsRestartTheirWaiters) {
  ThreadTable table;
  table.others.push_back(FdWaiter(71, {{.fd = 5, .events = POLLIN, .revents = 0}}));
  table.others.push_back(FdWaiter(
      72, {{.fd = 6, .events = POLLIN, .revents = 0}, {.fd = 7, .events = POLLOUT, .revents = 0}}));
  table.others.push_back(FdWaiter(73, {{.fd = 8, .events = POLLIN, .revents = 0}}));
  std::vector<pollfd> polled = table.FdWaitSet();
  EXPECT_EQ(table.WakeReadyFds(polled), 0);  // nothing ready
  polled[2].revents = POLLOUT;               // 72's second fd
  polled[3].revents = POLLHUP;               // 73's: hang-up counts too
  EXPECT_EQ(table.WakeReadyFds(polled), 2);
  EXPECT_TRUE(table.Find(71)->parked());
  const GuestThread& restarted = *table.Find(72);
  EXPECT_FALSE(restarted.parked());
  EXPECT_TRUE(restarted.restart);  // it makes its syscall again
  EXPECT_FALSE(table.Find(73)->parked());
  // With 72 and 73 runnable, only 71 is polled; a shorter set than expected wakes nobody.
  EXPECT_EQ(table.FdWaitSet().size(), 1u);
  EXPECT_EQ(table.WakeReadyFds({}), 0);
}

TEST(ThreadTable, AnFdWaitEndsAtItsDeadlineOrForASignal) {
  ThreadTable table;
  table.others.push_back(FdWaiter(81, {{.fd = 5, .events = POLLIN, .revents = 0}}, 900));
  EXPECT_EQ(table.EarliestDeadline(), 900);
  EXPECT_EQ(table.WakeExpired(900), 1);
  EXPECT_EQ(table.Find(81)->result, 0);
  EXPECT_FALSE(table.Find(81)->restart);
  table.others.push_back(FdWaiter(83, {}, 950));
  table.others.back().block.restart_at_deadline = true;  // select: made again, timeout over
  EXPECT_EQ(table.WakeExpired(1000), 1);
  EXPECT_TRUE(table.Find(83)->restart);
  GuestThread t = FdWaiter(82, {{.fd = 5, .events = POLLIN, .revents = 0}});
  InterruptThread(t);
  EXPECT_EQ(t.result, -EINTR);
  Repark(t);  // the signal went elsewhere: it waits for its fd again
  EXPECT_EQ(t.wait, ThreadWait::kFd);
  ASSERT_EQ(t.block.poll_fds.size(), 1u);
  // A write that wrote part of its bytes: a signal ends it with their count, not EINTR.
  GuestThread writer = FdWaiter(84, {{.fd = 6, .events = POLLOUT, .revents = 0}});
  writer.block.partial = PartialWrite{.nr = 1, .args = {6, 0x1000, 100000}, .done = 65536};
  InterruptThread(writer);
  EXPECT_EQ(writer.result, 65536);
  EXPECT_FALSE(writer.parked());
  EXPECT_FALSE(writer.woken_by_signal);  // final: never made to wait again
}

// A copy of the VM (snapshot, clone) sees a partial pipe write as done with its count: its
// pipe is not this one, so it must not make the write again.
TEST(ThreadTable, CapturedCpuCompletesPartialWrites) {
  GuestThread parked = FdWaiter(85, {{.fd = 6, .events = POLLOUT, .revents = 0}});
  parked.in_syscall = true;
  parked.syscall_nr = 1;
  parked.cpu.regs.rip = 0x401002;  // past its syscall
  parked.block.partial = PartialWrite{.nr = 1, .args = {6, 0x1000, 100000}, .done = 4096};
  EXPECT_EQ(ResumableCpu(parked).regs.rip, 0x401000u);  // it runs it again here
  EXPECT_EQ(CapturedCpu(parked).regs.rip, 0x401002u);   // a copy returns from it
  EXPECT_EQ(CapturedCpu(parked).regs.rax, 4096u);
  GuestThread about = FdWaiter(86, {});
  WakeThread(about, 0);
  about.in_syscall = false;
  about.cpu.regs.rip = 0x401000;  // on the syscall it is to make again
  about.resumed = PartialWrite{.nr = 1, .args = {6, 0x1000, 100000}, .done = 8192};
  EXPECT_EQ(CapturedCpu(about).regs.rip, 0x401002u);
  EXPECT_EQ(CapturedCpu(about).regs.rax, 8192u);
  GuestThread plain = FdWaiter(87, {{.fd = 6, .events = POLLIN, .revents = 0}});
  plain.in_syscall = true;
  plain.syscall_nr = 0;
  plain.cpu.regs.rip = 0x401002;
  EXPECT_EQ(CapturedCpu(plain).regs.rip, ResumableCpu(plain).regs.rip);
}

TEST(ThreadTable, FdWaitSetPollsAsTheKernelSays) {
  int ends[2];
  ASSERT_EQ(pipe(ends), 0);
  ThreadTable table;
  table.others.push_back(FdWaiter(91, {{.fd = ends[0], .events = POLLIN, .revents = 0}}));
  std::vector<pollfd> polled = table.FdWaitSet();
  EXPECT_EQ(poll(polled.data(), polled.size(), 0), 0);
  EXPECT_EQ(table.WakeReadyFds(polled), 0);
  ASSERT_EQ(write(ends[1], "x", 1), 1);
  polled = table.FdWaitSet();
  EXPECT_EQ(poll(polled.data(), polled.size(), 0), 1);
  EXPECT_EQ(table.WakeReadyFds(polled), 1);
  close(ends[0]);
  close(ends[1]);
}

}  // namespace
}  // namespace flurry
