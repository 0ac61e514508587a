#include "fork/fork_controller.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <thread>

#include "arch/x86_64/layout.h"
#include "base/test_temp_dir.h"
#include "flurry/sf_abi.h"
#include "fork/fork_test_support.h"

namespace flurry {
namespace {

using testing::FakeForkHost;

constexpr uint64_t kOut = 3 << 20;      // sf_outcome array / checkpoint id
constexpr uint64_t kResult = 4 << 20;   // a clone's result blob
constexpr uint64_t kBuffers = 5 << 20;  // the parent's result buffers
constexpr uint64_t kBufferStride = 4096;

// Waits up to 10 s for a counter another process bumps (a behaviour wait).
bool WaitFor(const std::atomic<int>& counter, int value) {
  for (int i = 0; i < 1000 && counter.load() < value; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return counter.load() == value;
}

class ForkControllerTest : public ::testing::Test {
 protected:
  void SetUp() override { Make(ForkPolicy{}); }
  void Make(ForkPolicy policy) {
    auto controller = ForkController::Create(policy);
    ASSERT_TRUE(controller.has_value()) << controller.error().message();
    controller_.emplace(std::move(*controller));
  }

  int64_t Hc(long nr, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0) {
    last_ = HcResult(nr, a0, a1, a2);
    return last_.value;
  }
  SyscallResult HcResult(long nr, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0) {
    SyscallContext context{memory_, state_};
    return controller_->Handle(context, SyscallArgs{static_cast<uint64_t>(nr), {a0, a1, a2}},
                               host_);
  }

  // In a clone (never returns): checks what it can, reports `status` (99 if a check failed)
  // and the result blob "clone-<id>" through sf_exit, and ends.
  [[noreturn]] void RunClone(int64_t returned, int status) {
    const int32_t id = controller_->clone_id();
    bool ok = returned == id && id >= 1 && controller_->is_clone() && Hc(SF_HC_ID) == id;
    ok = ok && Hc(SF_HC_EXIT, 0, kResult, SF_MAX_RESULT + 1) == -E2BIG;
    ok = ok && Hc(SF_HC_TICKET_INFO, 1) == -EINVAL;  // the parent's tickets are not ours
    const std::string blob = "clone-" + std::to_string(id);
    (void)memory_.Write(kResult, blob.data(), blob.size());
    SyscallResult exit = HcResult(SF_HC_EXIT, ok ? status : 99, kResult, blob.size());
    if (exit.action != SyscallResult::Action::kExit) exit.value = 98;
    controller_->ReportOutcome(CloneOutcome{SF_OUTCOME_EXITED, static_cast<int32_t>(exit.value), 0,
                                            controller_->exit_result()});
    _exit(0);
  }

  // Writes `count` outcome slots at kOut, slot i with a result buffer of capacity[i].
  void PrepareOutcomes(int count, const std::vector<uint64_t>& capacity) {
    for (int i = 0; i < count; ++i) {
      sf_outcome slot{};
      slot.result = kBuffers + i * kBufferStride;
      slot.result_capacity = capacity[i];
      ASSERT_TRUE(memory_.WriteObject(kOut + i * sizeof(sf_outcome), slot).has_value());
    }
  }
  sf_outcome Outcome(int i) {
    return memory_.ReadObject<sf_outcome>(kOut + i * sizeof(sf_outcome)).value();
  }
  std::string Buffer(int i, size_t n) {
    std::string s(n, '\0');
    EXPECT_TRUE(memory_.Read(kBuffers + i * kBufferStride, s.data(), n).has_value());
    return s;
  }

  GuestMemory memory_ = GuestMemory::Create(16 << 20).value();
  GuestState state_;
  FakeForkHost host_;
  std::optional<ForkController> controller_;
  SyscallResult last_;
};

TEST_F(ForkControllerTest, RecognizesHypercalls) {
  EXPECT_TRUE(ForkController::IsHypercall(SF_HC_BASE));
  EXPECT_TRUE(ForkController::IsHypercall(SF_HC_ID));
  EXPECT_TRUE(ForkController::IsHypercall(SF_HC_BASE + SF_HC_COUNT - 1));
  EXPECT_FALSE(ForkController::IsHypercall(SF_HC_BASE + SF_HC_COUNT));
  EXPECT_FALSE(ForkController::IsHypercall(SF_HC_BASE - 1));
  EXPECT_FALSE(ForkController::IsHypercall(39));
  EXPECT_EQ(Hc(39), -ENOSYS);
  EXPECT_EQ(Hc(SF_HC_ID), 0);
  EXPECT_FALSE(controller_->is_clone());
  EXPECT_EQ(controller_->clone_id(), 0);
}

TEST_F(ForkControllerTest, GrantsTickets) {
  EXPECT_EQ(Hc(SF_HC_REQUEST_TICKET, 0), -EINVAL);
  EXPECT_EQ(Hc(SF_HC_REQUEST_TICKET, static_cast<uint64_t>(-5)), -EINVAL);
  EXPECT_EQ(Hc(SF_HC_REQUEST_TICKET, 0xffffffff00000000ULL), -EINVAL);  // int: low 32 bits
  const int64_t first = Hc(SF_HC_REQUEST_TICKET, 2);
  const int64_t second = Hc(SF_HC_REQUEST_TICKET, 1);
  EXPECT_EQ(first, 1);  // (clone id 0 << 32) | 1
  EXPECT_EQ(second, 2);
  EXPECT_EQ(Hc(SF_HC_TICKET_INFO, first), 2);
  EXPECT_EQ(Hc(SF_HC_TICKET_INFO, second), 1);
  EXPECT_EQ(Hc(SF_HC_TICKET_INFO, 3), -EINVAL);
  EXPECT_EQ(Hc(SF_HC_TICKET_INFO, (1ULL << 32) | 1), -EINVAL);  // another VM's ticket 1
}

TEST_F(ForkControllerTest, CapsGrants) {
  Make(ForkPolicy{.max_clones_per_ticket = 3, .remote = nullptr});
  EXPECT_EQ(Hc(SF_HC_TICKET_INFO, Hc(SF_HC_REQUEST_TICKET, 10)), 3);
  EXPECT_EQ(Hc(SF_HC_TICKET_INFO, Hc(SF_HC_REQUEST_TICKET, 2)), 2);
  // No memory for even one clone.
  Make(ForkPolicy{
      .max_clones_per_ticket = 64, .clone_memory_estimate = 1ULL << 62, .remote = nullptr});
  EXPECT_EQ(Hc(SF_HC_REQUEST_TICKET, 1), -EAGAIN);
}

// Two idle hosts with 2 and 1 slots and memory to spare, as their daemons would say.
class IdleHosts : public HostStatusSource {
 public:
  Result<std::vector<HostReport>> Query() override {
    std::vector<HostReport> reports(2);
    reports[0].name = "host1";
    reports[0].slots = 2;
    reports[1].name = "host2";
    reports[1].slots = 1;
    for (HostReport& report : reports) {
      report.up = true;
      report.free_memory_bytes = 1ULL << 40;
    }
    return reports;
  }
};

// With a cluster, the allocator grants m <= n slots across its hosts.
TEST_F(ForkControllerTest, ClusterTicketsComeFromTheAllocator) {
  auto config = std::make_shared<RemoteCloneConfig>();
  auto allocator = std::make_shared<ClusterFileAllocator>(
      std::vector<ClusterFileAllocator::Host>{{"host1", 2}, {"host2", 1}},
      std::make_unique<IdleHosts>(), 16ULL << 20);
  config->allocator = allocator;
  config->remote_binary = "/bin/true";  // each host's stand-in starts with the ticket
  Make(ForkPolicy{.max_clones_per_ticket = 64, .remote = config});
  const int64_t first = Hc(SF_HC_REQUEST_TICKET, 10);
  EXPECT_EQ(Hc(SF_HC_TICKET_INFO, first), 3);
  EXPECT_EQ(allocator->reserved("host1"), 2);
  EXPECT_EQ(allocator->reserved("host2"), 1);
  // The cluster is full; the local host's memory does not count.
  EXPECT_EQ(Hc(SF_HC_REQUEST_TICKET, 1), -EAGAIN);
  // An unused ticket given back frees its slots for the next request.
  EXPECT_EQ(Hc(SF_HC_RELEASE_TICKET, first), 0);
  EXPECT_EQ(allocator->reserved("host1"), 0);
  EXPECT_EQ(allocator->reserved("host2"), 0);
  EXPECT_EQ(Hc(SF_HC_TICKET_INFO, Hc(SF_HC_REQUEST_TICKET, 2)), 2);
  EXPECT_EQ(allocator->reserved("host1") + allocator->reserved("host2"), 2);
  // A VM that goes gives its slots back.
  controller_.reset();
  EXPECT_EQ(allocator->reserved("host1"), 0);
  EXPECT_EQ(allocator->reserved("host2"), 0);
  // A spare stand-in that has died is of no use: the allocator asks its own source how the
  // hosts are (3 granted), and the ticket starts its stand-in itself. This "flurry-remote"
  // closes the spare's socket, says so, and ends; as a stand-in it says so.
  TestTempDir dir("flurry-spare");
  const std::string script = dir.path() + "/flurry-remote";
  {
    std::ofstream out(script);
    out << "#!/bin/sh\n"
        << "if [ \"$1\" = spare ]; then exec 3>&-; touch " << dir.path() << "/spare; exit 0; fi\n"
        << "touch " << dir.path() << "/standin\n";
  }
  ASSERT_EQ(chmod(script.c_str(), 0755), 0);
  config->remote_binary = script;
  config->spare_standin = true;
  Make(ForkPolicy{.max_clones_per_ticket = 64, .remote = config});
  auto exists = [&](const char* name) {
    for (int i = 0; i < 1000; ++i) {
      if (access((dir.path() + "/" + name).c_str(), F_OK) == 0) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  };
  ASSERT_TRUE(exists("spare"));  // its socket is closed: handing it the job fails
  EXPECT_EQ(Hc(SF_HC_TICKET_INFO, Hc(SF_HC_REQUEST_TICKET, 10)), 3);
  EXPECT_TRUE(exists("standin"));
  controller_.reset();
  config->spare_standin = false;
  config->remote_binary = "/bin/true";
  // Stand-ins that cannot start: no grant, and the slots stay free.
  config->remote_binary = "/nonexistent/flurry-remote";
  Make(ForkPolicy{.max_clones_per_ticket = 64, .remote = config});
  EXPECT_EQ(Hc(SF_HC_REQUEST_TICKET, 2), -EAGAIN);
  EXPECT_EQ(allocator->reserved("host1"), 0);
  EXPECT_EQ(allocator->reserved("host2"), 0);
}

TEST_F(ForkControllerTest, RejectsMisuse) {
  EXPECT_EQ(Hc(SF_HC_EXIT, 0, 0, 0), -EPERM);  // not a clone
  EXPECT_EQ(Hc(SF_HC_CLONE, 42), -EINVAL);
  EXPECT_EQ(Hc(SF_HC_JOIN, 42, kOut, 1), -EINVAL);
  EXPECT_EQ(Hc(SF_HC_KILL, 42), -EINVAL);
  EXPECT_EQ(Hc(SF_HC_CREATE_CLONES, 42, 1), -EINVAL);
  const int64_t ticket = Hc(SF_HC_REQUEST_TICKET, 1);
  ASSERT_GT(ticket, 0);
  // A ticket that has not cloned has nothing to join or kill.
  EXPECT_EQ(Hc(SF_HC_JOIN, ticket, kOut, 1), -EINVAL);
  EXPECT_EQ(Hc(SF_HC_KILL, ticket), -EINVAL);
  EXPECT_EQ(Hc(SF_HC_CREATE_CLONES, 7, ticket), -EINVAL);  // no such checkpoint
  // It can be given back, once.
  EXPECT_EQ(Hc(SF_HC_RELEASE_TICKET, 42), -EINVAL);
  EXPECT_EQ(Hc(SF_HC_RELEASE_TICKET, ticket), 0);
  EXPECT_EQ(Hc(SF_HC_RELEASE_TICKET, ticket), -EINVAL);
  EXPECT_EQ(Hc(SF_HC_TICKET_INFO, ticket), -EINVAL);
  EXPECT_EQ(Hc(SF_HC_CLONE, ticket), -EINVAL);
  // A bad checkpoint pointer fails before anything forks.
  EXPECT_EQ(Hc(SF_HC_CHECKPOINT, 0x10), -EFAULT);
  EXPECT_EQ(host_.counts().prepare.load(), 0);
}

TEST_F(ForkControllerTest, FailedSnapshotForkLeavesTheTicketUnused) {
  const int64_t ticket = Hc(SF_HC_REQUEST_TICKET, 1);
  host_.prepare_error = ENOMEM;
  EXPECT_EQ(Hc(SF_HC_CLONE, ticket), -ENOMEM);
  EXPECT_EQ(host_.counts().parent_with_child.load(), 0);
  EXPECT_EQ(host_.counts().parent_without_child.load(), 0);
  EXPECT_EQ(Hc(SF_HC_JOIN, ticket, kOut, 1), -EINVAL);
}

TEST_F(ForkControllerTest, ClonesRunAndAreJoined) {
  const int64_t ticket = Hc(SF_HC_REQUEST_TICKET, 2);
  ASSERT_EQ(Hc(SF_HC_TICKET_INFO, ticket), 2);
  const int64_t returned = Hc(SF_HC_CLONE, ticket);
  if (controller_->is_clone()) RunClone(returned, 40 + controller_->clone_id());
  ASSERT_EQ(returned, 0);
  EXPECT_EQ(Hc(SF_HC_CLONE, ticket), -EALREADY);
  EXPECT_EQ(Hc(SF_HC_JOIN, ticket, kOut, static_cast<uint64_t>(-1)), -EINVAL);
  EXPECT_EQ(Hc(SF_HC_JOIN, ticket, 0x10, 2), -EFAULT);
  PrepareOutcomes(2, {4, 64});
  ASSERT_EQ(Hc(SF_HC_JOIN, ticket, kOut, 2), 2);
  for (int i = 0; i < 2; ++i) {
    const sf_outcome o = Outcome(i);
    const int32_t id = 1 + i;  // a new family's first IDs
    EXPECT_EQ(o.id, id);
    EXPECT_EQ(o.kind, SF_OUTCOME_EXITED);
    EXPECT_EQ(o.status, 40 + id) << "99: a check in the clone failed; 98: sf_exit did not exit";
    EXPECT_EQ(o.result_length, 7u);  // "clone-N", whatever the buffer holds
  }
  EXPECT_EQ(Buffer(0, 5), std::string("clon\0", 5));  // capacity 4: truncated
  EXPECT_EQ(Buffer(1, 8), std::string("clone-2\0", 8));
  EXPECT_EQ(Hc(SF_HC_JOIN, ticket, kOut, 2), -EINVAL);  // released by the join

  // The hooks: one snapshot fork, two clone forks; all tied; the snapshot process releases
  // its guest when the join lets go of it.
  const auto& c = host_.counts();
  EXPECT_TRUE(WaitFor(c.release, 1));
  EXPECT_EQ(c.prepare.load(), 3);
  EXPECT_EQ(c.prepare_untied.load(), 0);
  EXPECT_EQ(c.parent_with_child.load(), 3);
  EXPECT_EQ(c.parent_without_child.load(), 0);
  EXPECT_EQ(c.child.load(), 3);
  EXPECT_EQ(c.become_clone.load(), 2);
  EXPECT_EQ(c.become_clone_bad_state.load(), 0);
  EXPECT_EQ(c.unbalanced.load(), 0);
}

TEST_F(ForkControllerTest, JoinReportsFewerSlotsThanClones) {
  const int64_t ticket = Hc(SF_HC_REQUEST_TICKET, 2);
  const int64_t returned = Hc(SF_HC_CLONE, ticket);
  if (controller_->is_clone()) RunClone(returned, 7);
  PrepareOutcomes(2, {0, 0});
  sf_outcome untouched{};
  untouched.id = -5;
  ASSERT_TRUE(memory_.WriteObject(kOut + sizeof(sf_outcome), untouched).has_value());
  EXPECT_EQ(Hc(SF_HC_JOIN, ticket, kOut, 1), 2);  // the count of clones, not of slots
  EXPECT_EQ(Outcome(0).status, 7);
  EXPECT_EQ(Outcome(1).id, -5);
}

TEST_F(ForkControllerTest, KilledClonesJoinAsKilled) {
  const int64_t ticket = Hc(SF_HC_REQUEST_TICKET, 2);
  const int64_t returned = Hc(SF_HC_CLONE, ticket);
  if (controller_->is_clone()) {
    for (;;) pause();  // never reports
  }
  ASSERT_EQ(returned, 0);
  EXPECT_EQ(Hc(SF_HC_RELEASE_TICKET, ticket), -EALREADY);  // used: sf_join releases it
  EXPECT_EQ(Hc(SF_HC_KILL, ticket), 0);
  PrepareOutcomes(2, {0, 0});
  ASSERT_EQ(Hc(SF_HC_JOIN, ticket, kOut, 2), 2);
  EXPECT_EQ(Outcome(0).kind, SF_OUTCOME_KILLED);
  EXPECT_EQ(Outcome(1).kind, SF_OUTCOME_KILLED);
  EXPECT_EQ(Hc(SF_HC_KILL, ticket), -EINVAL);  // joined: gone
  EXPECT_EQ(Hc(SF_HC_RELEASE_TICKET, ticket), -EINVAL);
}

TEST_F(ForkControllerTest, CheckpointsSpawnClonesOnRequest) {
  const int64_t returned = Hc(SF_HC_CHECKPOINT, kOut);
  if (controller_->is_clone()) RunClone(returned, 50 + controller_->clone_id());
  ASSERT_EQ(returned, 0);
  const int64_t checkpoint = memory_.ReadObject<int64_t>(kOut).value();
  EXPECT_EQ(checkpoint, 1);
  const int64_t ticket = Hc(SF_HC_REQUEST_TICKET, 1);
  EXPECT_EQ(Hc(SF_HC_CREATE_CLONES, checkpoint, ticket + 100), -EINVAL);
  ASSERT_EQ(Hc(SF_HC_CREATE_CLONES, checkpoint, ticket), 0);
  EXPECT_EQ(Hc(SF_HC_CREATE_CLONES, checkpoint, ticket), -EALREADY);
  EXPECT_EQ(Hc(SF_HC_CLONE, ticket), -EALREADY);
  PrepareOutcomes(1, {16});
  ASSERT_EQ(Hc(SF_HC_JOIN, ticket, kOut, 1), 1);
  EXPECT_EQ(Outcome(0).id, 1);
  EXPECT_EQ(Outcome(0).kind, SF_OUTCOME_EXITED);
  EXPECT_EQ(Outcome(0).status, 51);
  EXPECT_EQ(Buffer(0, 7), "clone-1");
  // Checkpoint IDs count up; the first snapshot process stays until the VM ends.
  const int64_t second = Hc(SF_HC_CHECKPOINT, kOut);
  if (controller_->is_clone()) RunClone(second, 0);
  EXPECT_EQ(memory_.ReadObject<int64_t>(kOut).value(), 2);
  EXPECT_EQ(host_.counts().release.load(), 0);
  controller_->KillOutstanding();
  EXPECT_TRUE(WaitFor(host_.counts().release, 2));
}

TEST_F(ForkControllerTest, AReleasedCheckpointEndsOnceItsClonesAreJoined) {
  const int64_t returned = Hc(SF_HC_CHECKPOINT, kOut);
  if (controller_->is_clone()) {
    // Still running when the parent releases the checkpoint (it would die with the snapshot
    // process if that ended then).
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    RunClone(returned, 7);
  }
  ASSERT_EQ(returned, 0);
  const int64_t checkpoint = memory_.ReadObject<int64_t>(kOut).value();
  const int64_t ticket = Hc(SF_HC_REQUEST_TICKET, 2);
  ASSERT_EQ(Hc(SF_HC_CREATE_CLONES, checkpoint, ticket), 0);
  EXPECT_EQ(Hc(SF_HC_RELEASE_CHECKPOINT, checkpoint), 0);
  EXPECT_EQ(Hc(SF_HC_RELEASE_CHECKPOINT, checkpoint), -EINVAL);  // released already
  const int64_t other = Hc(SF_HC_REQUEST_TICKET, 1);
  EXPECT_EQ(Hc(SF_HC_CREATE_CLONES, checkpoint, other), -EINVAL);
  PrepareOutcomes(2, {16, 16});
  ASSERT_EQ(Hc(SF_HC_JOIN, ticket, kOut, 2), 2);
  for (int i = 0; i < 2; ++i) {
    EXPECT_EQ(Outcome(i).kind, SF_OUTCOME_EXITED) << i;
    EXPECT_EQ(Outcome(i).status, 7) << i;
  }
  // Joined: nothing holds the snapshot process any more.
  EXPECT_TRUE(WaitFor(host_.counts().release, 1));
  // A checkpoint without clones ends at its release.
  ASSERT_EQ(Hc(SF_HC_CHECKPOINT, kOut), 0);
  EXPECT_EQ(Hc(SF_HC_RELEASE_CHECKPOINT, memory_.ReadObject<int64_t>(kOut).value()), 0);
  EXPECT_TRUE(WaitFor(host_.counts().release, 2));
  EXPECT_EQ(Hc(SF_HC_RELEASE_CHECKPOINT, 12345), -EINVAL);
}

}  // namespace
}  // namespace flurry
