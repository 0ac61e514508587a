#include "guest/process_table.h"

#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <csignal>

namespace flurry {
namespace {

TEST(ProcessTable, InitIsProcessOneInItsOwnGroupAndSession) {
  ProcessTable table = ProcessTable::Create(1, 1).value();
  EXPECT_TRUE(table.is_init());
  EXPECT_EQ(table.pid(), 1);
  EXPECT_EQ(table.ParentPid(), 0);
  EXPECT_EQ(table.GroupOf(0).value(), 1);
  EXPECT_EQ(table.SessionOf(0).value(), 1);
  EXPECT_EQ(table.Count(), 1);
  EXPECT_EQ(table.GroupOf(7).error().code_or(0), ESRCH);
}

TEST(ProcessTable, IdsAreFreshAndSkipLivePids) {
  ProcessTable table = ProcessTable::Create(1, 1).value();
  const int32_t a = table.AllocateId();
  const int32_t b = table.AllocateId();
  EXPECT_EQ(a, 2);
  EXPECT_EQ(b, 3);
  const int slot = table.Reserve(4, SIGCHLD).value();
  table.Started(slot, true, UniqueFd());
  EXPECT_EQ(table.AllocateId(), 5);  // 4 is a live process
}

TEST(ProcessTable, ChildEndsAsZombieUntilReaped) {
  ProcessTable table = ProcessTable::Create(1, 1).value();
  const int32_t pid = table.AllocateId();
  const int slot = table.Reserve(pid, SIGCHLD).value();
  const pid_t host = fork();
  ASSERT_GE(host, 0);
  if (host == 0) {  // the child's view of the same shared table
    table.BecomeChild(slot);
    if (table.ParentPid() != 1 || table.pid() != pid) _exit(1);
    table.Exit(42 << 8);
    _exit(0);
  }
  table.Started(slot, true, UniqueFd());
  int status = 0;
  ASSERT_EQ(waitpid(host, &status, 0), host);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(table.Count(), 2);
  ProcessTable::Waitable ended = table.FindEnded(-1, /*reap=*/false);
  EXPECT_TRUE(ended.any_child);
  EXPECT_EQ(ended.pid, pid);
  EXPECT_EQ(ended.wait_status, 42 << 8);
  int32_t sender = 0;
  EXPECT_EQ(table.TakeSignals(&sender), uint64_t{1} << (SIGCHLD - 1));  // the exit signal
  EXPECT_EQ(sender, pid);
  ended = table.FindEnded(pid, /*reap=*/true);
  EXPECT_EQ(ended.pid, pid);
  ended = table.FindEnded(-1, /*reap=*/false);
  EXPECT_FALSE(ended.any_child);  // reaped: ECHILD
  EXPECT_EQ(table.Count(), 1);
}

TEST(ProcessTable, KillReachesProcessesAndGroupsButNeverTheCaller) {
  ProcessTable table = ProcessTable::Create(1, 1).value();
  const int slot = table.Reserve(2, SIGCHLD).value();
  table.Started(slot, true, UniqueFd());
  EXPECT_EQ(table.Send(2, SIGTERM), 1);
  EXPECT_EQ(table.Send(9, SIGTERM), 0);   // ESRCH
  EXPECT_EQ(table.Send(0, SIGUSR1), 1);   // the caller's group holds the child
  EXPECT_EQ(table.Send(-1, SIGUSR2), 1);  // everyone but init (the caller)
  EXPECT_EQ(table.Send(-5, SIGUSR2), 0);  // no group 5
  EXPECT_EQ(table.TakeSignals(nullptr), 0u);
}

TEST(ProcessTable, ChildrenMoveToTheirOwnGroupAndSession) {
  ProcessTable table = ProcessTable::Create(1, 1).value();
  const int slot = table.Reserve(2, SIGCHLD).value();
  table.Started(slot, true, UniqueFd());
  EXPECT_TRUE(table.SetGroup(2, 0).has_value());
  EXPECT_EQ(table.GroupOf(2).value(), 2);
  EXPECT_EQ(table.SetGroup(2, 77).error().code_or(0), EPERM);  // no such group
  EXPECT_EQ(table.SetGroup(3, 0).error().code_or(0), ESRCH);
  EXPECT_EQ(table.NewSession().error().code_or(0), EPERM);  // init leads its group
  EXPECT_EQ(table.Send(-2, SIGTERM), 1);
}

TEST(ProcessTable, FailedForkGivesTheSlotBack) {
  ProcessTable table = ProcessTable::Create(1, 1).value();
  const int slot = table.Reserve(2, SIGCHLD).value();
  table.Started(slot, false, UniqueFd());
  EXPECT_EQ(table.Count(), 1);
  EXPECT_FALSE(table.FindEnded(-1, false).any_child);
}

}  // namespace
}  // namespace flurry
