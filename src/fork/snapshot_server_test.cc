#include "fork/snapshot_server.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstring>

#include "flurry/sf_abi.h"
#include "fork/fork_test_support.h"
#include "fork/outcome_channel.h"

namespace flurry {
namespace {

using testing::FakeForkHost;

class SnapshotServerTest : public ::testing::Test {
 protected:
  void SetUp() override { signal(SIGCHLD, SIG_DFL); }
  void TearDown() override {
    control_.Reset();
    if (server_ > 0) {
      kill(server_, SIGKILL);
      waitpid(server_, nullptr, 0);
    }
  }

  // Forks a snapshot process serving `control_`. Its clones report SF_OUTCOME_EXITED with
  // status = their id, then end.
  void Start(int32_t first_id, int32_t count, bool detached) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    server_ = fork();
    ASSERT_GE(server_, 0);
    if (server_ == 0) {
      close(sv[0]);
      CloneStart start = RunSnapshotServer(UniqueFd(sv[1]), first_id, count, detached, host_);
      (void)SendOutcome(start.channel.get(), CloneOutcome{SF_OUTCOME_EXITED, start.id, 0, {}});
      _exit(0);
    }
    close(sv[1]);
    control_.Reset(sv[0]);
  }

  // Sends raw bytes as one request; returns the one reply.
  SpawnReply Exchange(const void* request, size_t size) {
    EXPECT_EQ(send(control_.get(), request, size, 0), static_cast<ssize_t>(size));
    SpawnReply reply{};
    EXPECT_EQ(recv(control_.get(), &reply, sizeof reply, 0), static_cast<ssize_t>(sizeof reply));
    return reply;
  }

  // Ends the snapshot process (EOF on its control socket); returns its exit status.
  int Stop() {
    control_.Reset();
    int status = 0;
    EXPECT_EQ(waitpid(server_, &status, 0), server_);
    server_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1000 + WTERMSIG(status);
  }

  void ExpectClones(const std::vector<SpawnedClone>& clones, int32_t first_id) {
    for (size_t i = 0; i < clones.size(); ++i) {
      EXPECT_EQ(clones[i].id, first_id + static_cast<int32_t>(i));
      EXPECT_GT(clones[i].pid, 0);
      EXPECT_TRUE(clones[i].channel.valid());
      EXPECT_TRUE(clones[i].pidfd.valid());
      auto outcome = ReceiveOutcome(clones[i].channel.get());
      ASSERT_TRUE(outcome.has_value());
      EXPECT_EQ(outcome->kind, SF_OUTCOME_EXITED);
      EXPECT_EQ(outcome->status, clones[i].id);
    }
  }

  FakeForkHost host_;
  pid_t server_ = -1;
  UniqueFd control_;
};

TEST_F(SnapshotServerTest, RejectsMalformedRequests) {
  Start(0, 0, /*detached=*/false);
  const SpawnRequest good{kSnapshotMagic, kSnapshotVersion, 1, 10, 2};
  std::vector<SpawnRequest> bad(5, good);
  bad[0].magic ^= 1;
  bad[1].version = kSnapshotVersion + 1;
  bad[2].op = 2;
  bad[3].count = 0;
  bad[4].count = kMaxSpawnCount + 1;
  for (const SpawnRequest& request : bad) {
    const SpawnReply reply = Exchange(&request, sizeof request);
    EXPECT_EQ(reply.magic, kSnapshotMagic);
    EXPECT_EQ(reply.version, kSnapshotVersion);
    EXPECT_EQ(reply.type, SpawnReply::kError);
    EXPECT_EQ(reply.error, EINVAL);
  }
  // Too short, too long.
  EXPECT_EQ(Exchange(&good, 8).error, EINVAL);
  char longer[sizeof good + 8] = {};
  std::memcpy(longer, &good, sizeof good);
  EXPECT_EQ(Exchange(longer, sizeof longer).type, SpawnReply::kError);
  // Through the owner's API.
  ASSERT_EQ(send(control_.get(), &bad[3], sizeof bad[3], 0), static_cast<ssize_t>(sizeof bad[3]));
  auto replies = ReceiveSpawnReplies(control_.get(), 0);
  ASSERT_FALSE(replies.has_value());
  EXPECT_EQ(replies.error().code(), EINVAL);
  EXPECT_EQ(host_.counts().prepare.load(), 0);  // nothing forked

  // Still serving: a good request spawns.
  ASSERT_TRUE(SendSpawnRequest(control_.get(), 10, 2).has_value());
  auto clones = ReceiveSpawnReplies(control_.get(), 2);
  ASSERT_TRUE(clones.has_value()) << clones.error().message();
  ASSERT_EQ(clones->size(), 2u);
  ExpectClones(*clones, 10);
  EXPECT_EQ(Stop(), 0);
  const auto& c = host_.counts();
  EXPECT_EQ(c.prepare.load(), 2);
  EXPECT_EQ(c.prepare_untied.load(), 0);
  EXPECT_EQ(c.parent_with_child.load(), 2);
  EXPECT_EQ(c.parent_without_child.load(), 0);
  EXPECT_EQ(c.child.load(), 2);
  EXPECT_EQ(c.release.load(), 1);  // at the owner's EOF
  EXPECT_EQ(c.unbalanced.load(), 0);
}

TEST_F(SnapshotServerTest, SpawnsTheInitialBatchFirst) {
  Start(5, 3, /*detached=*/false);
  auto clones = ReceiveSpawnReplies(control_.get(), 3);
  ASSERT_TRUE(clones.has_value()) << clones.error().message();
  ASSERT_EQ(clones->size(), 3u);
  ExpectClones(*clones, 5);
  // Then it serves requests.
  ASSERT_TRUE(SendSpawnRequest(control_.get(), 100, 1).has_value());
  clones = ReceiveSpawnReplies(control_.get(), 1);
  ASSERT_TRUE(clones.has_value());
  ASSERT_EQ(clones->size(), 1u);
  ExpectClones(*clones, 100);
  EXPECT_EQ(Stop(), 0);
  EXPECT_EQ(host_.counts().prepare.load(), 4);
  EXPECT_EQ(host_.counts().child.load(), 4);
}

TEST_F(SnapshotServerTest, DetachedServerExitsAfterItsBatch) {
  Start(7, 1, /*detached=*/true);
  auto clones = ReceiveSpawnReplies(control_.get(), 1);
  ASSERT_TRUE(clones.has_value()) << clones.error().message();
  ASSERT_EQ(clones->size(), 1u);
  ExpectClones(*clones, 7);
  // Ends without waiting for EOF.
  int status = 0;
  ASSERT_EQ(waitpid(server_, &status, 0), server_);
  server_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(host_.counts().prepare_untied.load(), 1);
  EXPECT_EQ(host_.counts().release.load(), 1);
}

TEST_F(SnapshotServerTest, ReportsAFailedFork) {
  host_.prepare_error = EAGAIN;  // in the snapshot process (a copy of this host)
  Start(0, 0, /*detached=*/false);
  ASSERT_TRUE(SendSpawnRequest(control_.get(), 1, 2).has_value());
  auto clones = ReceiveSpawnReplies(control_.get(), 2);
  ASSERT_FALSE(clones.has_value());
  EXPECT_EQ(clones.error().code(), EAGAIN);
  EXPECT_EQ(host_.counts().parent_with_child.load(), 0);
  EXPECT_EQ(host_.counts().parent_without_child.load(), 0);
  EXPECT_EQ(Stop(), 0);
}

TEST(ForkWithHooks, CallsTheHooksOnBothSides) {
  signal(SIGCHLD, SIG_DFL);
  FakeForkHost host;
  auto pid = ForkWithHooks(host, /*tied_to_parent=*/false);
  ASSERT_TRUE(pid.has_value());
  if (*pid == 0) _exit(host.counts().child.load() == 1 ? 0 : 1);
  int status = 0;
  ASSERT_EQ(waitpid(*pid, &status, 0), *pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  EXPECT_EQ(host.counts().prepare.load(), 1);
  EXPECT_EQ(host.counts().prepare_untied.load(), 1);
  EXPECT_EQ(host.counts().parent_with_child.load(), 1);
  EXPECT_EQ(host.counts().child.load(), 1);
  EXPECT_EQ(host.counts().unbalanced.load(), 0);
}

TEST(ForkWithHooks, FailedPrepareForksNothing) {
  FakeForkHost host;
  host.prepare_error = ENOMEM;
  auto pid = ForkWithHooks(host, /*tied_to_parent=*/true);
  ASSERT_FALSE(pid.has_value());
  EXPECT_EQ(pid.error().code(), ENOMEM);
  EXPECT_EQ(host.counts().parent_with_child.load(), 0);
  EXPECT_EQ(host.counts().parent_without_child.load(), 0);
  EXPECT_EQ(host.counts().child.load(), 0);
}

TEST(ForkWithHooks, ChildWhoseHookFailsEnds) {
  signal(SIGCHLD, SIG_DFL);
  FakeForkHost host;
  host.child_error = EIO;
  auto pid = ForkWithHooks(host, /*tied_to_parent=*/true);
  if (pid.has_value() && *pid == 0) _exit(42);  // must not get here
  ASSERT_TRUE(pid.has_value());
  int status = 0;
  ASSERT_EQ(waitpid(*pid, &status, 0), *pid);
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 1);
  EXPECT_EQ(host.counts().child.load(), 1);
}

// The owner's side rejects what a snapshot process must never send.
TEST(ReceiveSpawnReplies, ValidatesReplies) {
  auto exchange = [](const SpawnReply& reply, int32_t expected) {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    EXPECT_EQ(send(sv[1], &reply, sizeof reply, 0), static_cast<ssize_t>(sizeof reply));
    close(sv[1]);
    auto result = ReceiveSpawnReplies(sv[0], expected);
    close(sv[0]);
    return result;
  };
  const SpawnReply done{kSnapshotMagic, kSnapshotVersion, SpawnReply::kDone, 0, 0, 0, 0};
  EXPECT_TRUE(exchange(done, 0).value().empty());
  SpawnReply bad = done;
  bad.magic = 0;
  EXPECT_FALSE(exchange(bad, 0).has_value());
  bad = done;
  bad.type = SpawnReply::kClone;  // a clone without its outcome channel
  EXPECT_FALSE(exchange(bad, 1).has_value());
  bad.type = 77;
  EXPECT_FALSE(exchange(bad, 1).has_value());
  SpawnReply error = done;
  error.type = SpawnReply::kError;
  error.error = ENOSPC;
  EXPECT_EQ(exchange(error, 1).error().code(), ENOSPC);
  // EOF before all clones: an error; EOF with none expected: fine.
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  close(sv[1]);
  EXPECT_FALSE(ReceiveSpawnReplies(sv[0], 1).has_value());
  close(sv[0]);
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  close(sv[1]);
  EXPECT_TRUE(ReceiveSpawnReplies(sv[0], 0).value().empty());
  close(sv[0]);
}

}  // namespace
}  // namespace flurry
