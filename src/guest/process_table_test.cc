#include "guest/process_table.h"

#include <gtest/gtest.h>
#include <sys/syscall.h>
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

// A child forked as a host process that takes `slot` in `table` and then runs `body` (whose
// return value is its host exit status). The parent side gets its pidfd.
template <typename Body>
pid_t ForkChild(ProcessTable& table, int slot, Body body) {
  const pid_t host = fork();
  if (host == 0) {
    table.BecomeChild(slot);
    _exit(body());
  }
  table.Started(slot, host > 0, UniqueFd(static_cast<int>(syscall(SYS_pidfd_open, host, 0))));
  return host;
}

void ExpectHostExit(pid_t host) {
  int status = 0;
  ASSERT_EQ(waitpid(host, &status, 0), host);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

// SIGCHLD ignored (or SA_NOCLDWAIT): a child that ends is freed at once, its parent still
// gets the exit signal, and a wait then finds no child (ECHILD).
TEST(ProcessTable, WithoutZombiesAnEndedChildIsGone) {
  ProcessTable table = ProcessTable::Create(1, 1).value();
  table.SetNoZombies(true);
  const int slot = table.Reserve(2, SIGCHLD).value();
  ExpectHostExit(ForkChild(table, slot, [&] {
    table.Exit(3 << 8);
    return 0;
  }));
  EXPECT_EQ(table.Count(), 1);
  EXPECT_FALSE(table.FindEnded(-1, false).any_child);
  EXPECT_EQ(table.TakeSignals(nullptr), uint64_t{1} << (SIGCHLD - 1));
  // Taken back: zombies again.
  table.SetNoZombies(false);
  const int again = table.Reserve(3, SIGCHLD).value();
  ExpectHostExit(ForkChild(table, again, [&] {
    table.Exit(0);
    return 0;
  }));
  EXPECT_EQ(table.FindEnded(-1, false).pid, 3);
}

// A child VMM that dies without reporting (killed from outside) is found through its pidfd:
// a zombie killed by SIGKILL, and its parent gets SIGCHLD.
TEST(ProcessTable, AChildKilledFromOutsideIsNoticed) {
  ProcessTable table = ProcessTable::Create(1, 1).value();
  const int slot = table.Reserve(2, SIGCHLD).value();
  ExpectHostExit(ForkChild(table, slot, [] { return 0; }));  // never calls Exit
  EXPECT_TRUE(table.HasRunningChildren());
  EXPECT_EQ(table.TakeSignals(nullptr), 0u);
  table.NoticeDeadChildren();
  EXPECT_FALSE(table.HasRunningChildren());
  int32_t sender = 0;
  EXPECT_EQ(table.TakeSignals(&sender), uint64_t{1} << (SIGCHLD - 1));
  EXPECT_EQ(sender, 2);
  const ProcessTable::Waitable ended = table.FindEnded(-1, true);
  EXPECT_EQ(ended.pid, 2);
  EXPECT_EQ(ended.wait_status, SIGKILL);
}

// An orphan goes to init with SIGCHLD as its exit signal, and init watches its VMM: killed
// from outside, it is noticed too.
TEST(ProcessTable, AnAdoptedOrphanIsWatchedByInit) {
  ProcessTable table = ProcessTable::Create(1, 1).value();
  const int middle = table.Reserve(2, SIGCHLD).value();
  int pipefd[2];
  ASSERT_EQ(pipe(pipefd), 0);
  ExpectHostExit(ForkChild(table, middle, [&] {
    // Process 2 forks process 3 (exit signal SIGUSR2), which waits for a byte, then ends
    // without reporting; process 2 exits first, leaving 3 to init.
    const int slot = table.Reserve(3, SIGUSR2).value();
    ForkChild(table, slot, [&] {
      char byte;
      close(pipefd[1]);
      return read(pipefd[0], &byte, 1) == 1 ? 0 : 1;
    });
    table.Exit(0);
    return 0;
  }));
  close(pipefd[0]);
  EXPECT_EQ(table.FindEnded(2, true).pid, 2);
  EXPECT_TRUE(table.HasRunningChildren());  // 3 is init's now
  table.NoticeDeadChildren();               // watches it
  EXPECT_EQ(table.FindEnded(3, false).pid, 0);
  (void)table.TakeSignals(nullptr);
  ASSERT_EQ(write(pipefd[1], "x", 1), 1);  // 3 ends without reporting
  close(pipefd[1]);
  for (int i = 0; i < 500 && table.HasRunningChildren(); ++i) {
    usleep(10'000);
    table.NoticeDeadChildren();
  }
  EXPECT_EQ(table.TakeSignals(nullptr), uint64_t{1} << (SIGCHLD - 1));  // not SIGUSR2
  const ProcessTable::Waitable ended = table.FindEnded(3, true);
  EXPECT_EQ(ended.pid, 3);
  EXPECT_EQ(ended.wait_status, SIGKILL);
}

TEST(ProcessTable, ChildSelectors) {
  using Selector = ProcessTable::ChildSelector;
  ProcessTable table = ProcessTable::Create(1, 1).value();
  const int slot = table.Reserve(2, SIGCHLD).value();
  ExpectHostExit(ForkChild(table, slot, [&] {
    table.Exit(0);
    return 0;
  }));
  // The child is in init's group, 1.
  EXPECT_EQ(table.FindEnded(Selector{Selector::kGroup, 1}, false).pid, 2);
  EXPECT_EQ(table.FindEnded(Selector{Selector::kOwnGroup, 0}, false).pid, 2);
  EXPECT_FALSE(table.FindEnded(Selector{Selector::kGroup, 5}, false).any_child);
  EXPECT_FALSE(table.FindEnded(Selector{Selector::kPid, 3}, false).any_child);
  EXPECT_EQ(table.FindEnded(Selector{}, false).pid, 2);  // any
  EXPECT_EQ(Selector::FromWait4(-7).kind, Selector::kGroup);
  EXPECT_EQ(Selector::FromWait4(-7).id, 7);
  EXPECT_EQ(Selector::FromWait4(0).kind, Selector::kOwnGroup);
}

}  // namespace
}  // namespace flurry

namespace flurry {
namespace {

// Cloning a VM of several processes: the cloning process asks every other running one to join
// (once per gathering; a process forked meanwhile is asked too), and not itself or a zombie.
TEST(ProcessTableGathering, AsksEveryOtherRunningProcessToJoin) {
  ProcessTable init = ProcessTable::Create(1, 1).value();
  const int a = init.Reserve(2, SIGCHLD).value();
  init.Started(a, true, UniqueFd());
  const int b = init.Reserve(3, SIGCHLD).value();
  init.Started(b, true, UniqueFd());
  EXPECT_EQ(init.OtherRunningPids(), (std::vector<int32_t>{2, 3}));
  EXPECT_FALSE(init.GatheringPending());
  const ProcessTable::Gathering call = init.StartGathering(4242);
  EXPECT_EQ(call.hub_host_pid, 4242);
  EXPECT_NE(call.number, 0u);
  init.AskToJoin(call, {3});           // 3 has joined already
  EXPECT_FALSE(init.TakeGathering());  // the caller is not asked
  const pid_t host = fork();
  ASSERT_GE(host, 0);
  if (host == 0) {  // process 2's view: asked once
    init.BecomeChild(a);
    if (!init.GatheringPending()) _exit(1);
    const std::optional<ProcessTable::Gathering> taken = init.TakeGathering();
    if (!taken || taken->number != call.number || taken->hub_host_pid != 4242) _exit(2);
    if (init.GatheringPending() || init.TakeGathering()) _exit(3);
    init.BecomeChild(b);  // (a view of process 3 now)
    if (init.GatheringPending()) _exit(4);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(host, &status, 0), host);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(init.StartGathering(4242).number, call.number + 1);  // each gathering its number
}

// A clone's table: the image taken at the clone instant, in a memfd its processes share, with
// their new VMMs; nothing pending from the parent (a gathering, a shutdown), no fork under way.
TEST(ProcessTableGathering, ACloneTableIsTheImageWithTheClonesVmms) {
  ProcessTable init = ProcessTable::Create(1, 1).value();
  const int a = init.Reserve(2, SIGCHLD).value();
  init.Started(a, true, UniqueFd());
  (void)init.Reserve(3, SIGCHLD).value();  // a fork under way
  const int zombie = init.Reserve(4, SIGCHLD).value();
  init.Started(zombie, true, UniqueFd());
  const pid_t host = fork();
  ASSERT_GE(host, 0);
  if (host == 0) {
    init.BecomeChild(zombie);
    init.Exit(5 << 8);
    _exit(0);
  }
  ASSERT_EQ(waitpid(host, nullptr, 0), host);
  (void)init.TakeSignals(nullptr);  // its SIGCHLD
  init.StartGathering(99);
  const std::vector<uint8_t> image = init.Image();

  // Process 2's VMM in the clone is this test process's child, waiting to be told to end.
  int go[2];
  ASSERT_EQ(pipe(go), 0);
  const pid_t copy = fork();
  ASSERT_GE(copy, 0);
  if (copy == 0) {
    char byte;
    _exit(read(go[0], &byte, 1) == 1 ? 0 : 1);
  }
  auto [clone, memfd] = ProcessTable::FromImage(image, 1, {{1, getpid()}, {2, copy}}).value();
  EXPECT_TRUE(clone.is_init());
  EXPECT_EQ(clone.Count(), 3);  // init, process 2 and the zombie; not the fork under way
  EXPECT_FALSE(clone.ShuttingDown());
  EXPECT_EQ(clone.OtherRunningPids(), (std::vector<int32_t>{2}));
  ProcessTable::Waitable ended = clone.FindEnded(4, /*reap=*/false);
  EXPECT_EQ(ended.wait_status, 5 << 8);
  // Process 2's view of the same memfd: asked to join nothing, its parent init.
  ProcessTable second = ProcessTable::Attach(memfd.get(), 2).value();
  EXPECT_FALSE(second.GatheringPending());
  EXPECT_EQ(second.ParentPid(), 1);
  EXPECT_FALSE(ProcessTable::Attach(memfd.get(), 3));  // not a process of the clone
  // What one view does, the other sees: the clone's table is shared.
  EXPECT_EQ(clone.Send(2, SIGUSR1), 1);
  int32_t sender = 0;
  EXPECT_EQ(second.TakeSignals(&sender), uint64_t{1} << (SIGUSR1 - 1));
  EXPECT_EQ(sender, 1);
  // The parent's table is untouched.
  EXPECT_EQ(init.TakeSignals(&sender), 0u);
  ASSERT_EQ(write(go[1], "g", 1), 1);
  ASSERT_EQ(waitpid(copy, nullptr, 0), copy);
  close(go[0]);
  close(go[1]);
  EXPECT_FALSE(ProcessTable::FromImage(std::vector<uint8_t>(10), 1, {}));
}

// A snapshot records the table as plain records (init first, running and ended processes, not
// a fork under way); a restore makes a table of them that works as the original did.
TEST(ProcessTableGathering, TheTableAsRecordsAndBack) {
  ProcessTable init = ProcessTable::Create(1, 1).value();
  const int a = init.Reserve(init.AllocateId(), SIGCHLD).value();  // pid 2
  init.Started(a, true, UniqueFd());
  (void)init.Reserve(init.AllocateId(), SIGCHLD).value();               // pid 3, a fork under way
  const int zombie = init.Reserve(init.AllocateId(), SIGUSR2).value();  // pid 4
  init.Started(zombie, true, UniqueFd());
  const pid_t host = fork();
  ASSERT_GE(host, 0);
  if (host == 0) {
    init.BecomeChild(zombie);
    init.Exit(7 << 8);
    _exit(0);
  }
  ASSERT_EQ(waitpid(host, nullptr, 0), host);
  (void)init.TakeSignals(nullptr);  // its exit signal
  EXPECT_EQ(init.Send(2, SIGUSR1), 1);
  ASSERT_TRUE(init.SetGroup(2, 2));

  int32_t last_id = 0;
  const std::vector<ProcessRecord> records =
      ProcessTable::RecordsOf(init.Image(), &last_id).value();
  EXPECT_EQ(last_id, 4);
  ASSERT_EQ(records.size(), 3u);
  // (Init's last signal came from process 4: its exit signal, taken.)
  EXPECT_EQ(records[0], (ProcessRecord{.pid = 1, .ppid = 0, .pgid = 1, .sid = 1, .sender = 4}));
  EXPECT_EQ(records[1], (ProcessRecord{.pid = 2,
                                       .ppid = 1,
                                       .pgid = 2,
                                       .sid = 1,
                                       .signals = uint64_t{1} << (SIGUSR1 - 1),
                                       .sender = 1,
                                       .exit_signal = SIGCHLD}));
  EXPECT_EQ(records[2], (ProcessRecord{.pid = 4,
                                       .ppid = 1,
                                       .pgid = 1,
                                       .sid = 1,
                                       .zombie = true,
                                       .wait_status = 7 << 8,
                                       .exit_signal = SIGUSR2}));

  const std::vector<uint8_t> image = ProcessTable::ImageOf(records, last_id).value();
  int32_t again_last = 0;
  EXPECT_EQ(ProcessTable::RecordsOf(image, &again_last).value(), records);
  EXPECT_EQ(again_last, last_id);
  auto [restored, memfd] = ProcessTable::FromImage(image, 1, {{1, getpid()}}).value();
  EXPECT_EQ(restored.Count(), 3);
  EXPECT_EQ(restored.OtherRunningPids(), (std::vector<int32_t>{2}));
  EXPECT_EQ(restored.GroupOf(2).value(), 2);
  const ProcessTable::Waitable ended = restored.FindEnded(4, /*reap=*/true);
  EXPECT_EQ(ended.pid, 4);
  EXPECT_EQ(ended.wait_status, 7 << 8);
  EXPECT_EQ(restored.Count(), 2);
  EXPECT_EQ(restored.AllocateId(), 5);  // after the newest id recorded

  EXPECT_FALSE(ProcessTable::ImageOf({}, 1));
  EXPECT_FALSE(ProcessTable::RecordsOf(std::vector<uint8_t>(10), &last_id));
}

}  // namespace
}  // namespace flurry

namespace flurry {
namespace {

// One gathering at a time per VM; an owner that died holds nothing.
TEST(ProcessTableGathering, OneOwnerAtATime) {
  ProcessTable init = ProcessTable::Create(1, 1).value();
  EXPECT_TRUE(init.TryOwnGathering(getpid()));
  const pid_t other = fork();
  ASSERT_GE(other, 0);
  if (other == 0) _exit(init.TryOwnGathering(getpid()) ? 1 : 0);  // taken
  int status = 0;
  ASSERT_EQ(waitpid(other, &status, 0), other);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  init.ReleaseGathering(getpid());
  // A child takes it and dies holding it: the next owner may take it over.
  const pid_t dying = fork();
  ASSERT_GE(dying, 0);
  if (dying == 0) _exit(init.TryOwnGathering(getpid()) ? 0 : 1);
  ASSERT_EQ(waitpid(dying, &status, 0), dying);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_TRUE(init.TryOwnGathering(getpid()));
  init.ReleaseGathering(getpid());
}

}  // namespace
}  // namespace flurry
