#include "fork/vm_gathering.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <string>

namespace flurry {
namespace {

using std::chrono::milliseconds;

struct Pair {
  UniqueFd a, b;
  static Pair Make() {
    int sv[2];
    EXPECT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    return Pair{UniqueFd(sv[0]), UniqueFd(sv[1])};
  }
};

TEST(VmGatheringTest, AMessageCarriesItsFields) {
  Pair p = Pair::Make();
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  GatherMessage hello;
  hello.type = GatherMessage::kHello;
  hello.pid = 7;
  hello.count = 1;
  hello.ids[0] = 1234;
  ASSERT_TRUE(SendGatherMessage(p.a.get(), hello, {pipe_fds[0]}));
  std::vector<UniqueFd> fds;
  Result<GatherMessage> got =
      ReceiveGatherMessage(p.b.get(), GatherMessage::kHello, milliseconds(1000), &fds);
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_EQ(got->pid, 7);
  EXPECT_EQ(got->ids[0], 1234u);
  ASSERT_EQ(fds.size(), 1u);
  ASSERT_EQ(write(pipe_fds[1], "x", 1), 1);  // the fd received is that pipe's read end
  char byte = 0;
  EXPECT_EQ(read(fds[0].get(), &byte, 1), 1);
  EXPECT_EQ(byte, 'x');
  close(pipe_fds[0]);
  close(pipe_fds[1]);
}

// Whatever another VMM sends, the receiver refuses it with an error: a short or long packet,
// another magic or version, an unexpected type, too many pipes, fds that do not match.
TEST(VmGatheringTest, MalformedMessagesAreRefused) {
  auto refused = [](auto send) {
    Pair p = Pair::Make();
    send(p.a.get());
    return ReceiveGatherMessage(p.b.get(), GatherMessage::kHello, milliseconds(1000))
        .error()
        .message();
  };
  EXPECT_NE(refused([](int fd) { ASSERT_EQ(send(fd, "short", 5, 0), 5); }).find("malformed"),
            std::string::npos);
  EXPECT_NE(refused([](int fd) {
              std::string big(sizeof(GatherMessage) + 8, 'x');
              ASSERT_EQ(send(fd, big.data(), big.size(), 0), static_cast<ssize_t>(big.size()));
            }).find("malformed"),
            std::string::npos);
  EXPECT_NE(refused([](int fd) {
              GatherMessage m;
              m.type = GatherMessage::kHello;
              m.magic = 1;
              ASSERT_TRUE(SendGatherMessage(fd, m));
            }).find("magic"),
            std::string::npos);
  EXPECT_NE(refused([](int fd) {
              GatherMessage m;
              m.type = GatherMessage::kSpawn;
              ASSERT_TRUE(SendGatherMessage(fd, m));
            }).find("instead of"),
            std::string::npos);
  EXPECT_NE(refused([](int fd) {
              GatherMessage m;
              m.type = GatherMessage::kHello;
              m.count = kMaxGatherPipes + 1;
              ASSERT_TRUE(SendGatherMessage(fd, m));
            }).find("at most"),
            std::string::npos);
  EXPECT_NE(refused([](int fd) {
              GatherMessage m;
              m.type = GatherMessage::kHello;
              m.count = 2;  // but no fds
              ASSERT_TRUE(SendGatherMessage(fd, m));
            }).find("fds"),
            std::string::npos);
  EXPECT_NE(refused([](int fd) { shutdown(fd, SHUT_WR); }).find("gone"), std::string::npos);
}

// A copier waits for SPAWN or WRITE: either comes, with the fds its type carries (WRITE: the
// directory; SPAWN: none); any other type is refused. WRITE carries the VM's clock.
TEST(VmGatheringTest, ACopierTakesASpawnOrAWriteWithItsDirectory) {
  Pair p = Pair::Make();
  const UniqueFd directory(open("/tmp", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  ASSERT_TRUE(directory.valid());
  GatherMessage write;
  write.type = GatherMessage::kWrite;
  write.pid = 9;
  write.clock_ns = 123456789;
  write.realtime_ns = -5;
  ASSERT_TRUE(SendGatherMessage(p.a.get(), write, {directory.get()}));
  GatherMessage spawn;
  spawn.type = GatherMessage::kSpawn;
  spawn.clone_id = 3;
  ASSERT_TRUE(SendGatherMessage(p.a.get(), spawn));
  GatherMessage written;
  written.type = GatherMessage::kWritten;
  ASSERT_TRUE(SendGatherMessage(p.a.get(), written));
  GatherMessage unfit = write;  // a WRITE without its directory
  ASSERT_TRUE(SendGatherMessage(p.a.get(), unfit));

  const auto kinds = {GatherMessage::kSpawn, GatherMessage::kWrite};
  std::vector<UniqueFd> fds;
  Result<GatherMessage> got = ReceiveGatherMessageOf(p.b.get(), kinds, milliseconds(1000), &fds);
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_EQ(got->type, GatherMessage::kWrite);
  EXPECT_EQ(got->clock_ns, 123456789);
  EXPECT_EQ(got->realtime_ns, -5);
  ASSERT_EQ(fds.size(), 1u);
  struct stat st {};
  ASSERT_EQ(fstat(fds[0].get(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  got = ReceiveGatherMessageOf(p.b.get(), kinds, milliseconds(1000), &fds);
  ASSERT_TRUE(got) << got.error().message();
  EXPECT_EQ(got->type, GatherMessage::kSpawn);
  EXPECT_EQ(got->clone_id, 3);
  EXPECT_TRUE(fds.empty());
  got = ReceiveGatherMessageOf(p.b.get(), kinds, milliseconds(1000), &fds);
  ASSERT_FALSE(got);
  EXPECT_NE(got.error().message().find("instead of"), std::string::npos);
  got = ReceiveGatherMessageOf(p.b.get(), kinds, milliseconds(1000), &fds);
  ASSERT_FALSE(got);
  EXPECT_NE(got.error().message().find("fds"), std::string::npos);
}

TEST(VmGatheringTest, NothingWithinTheTimeoutIsAnError) {
  Pair p = Pair::Make();
  Result<GatherMessage> got =
      ReceiveGatherMessage(p.b.get(), GatherMessage::kRelease, milliseconds(30));
  ASSERT_FALSE(got);
  EXPECT_EQ(got.error().code(), ETIMEDOUT);
}

// Abstract sockets: one listener per name, connections to it only while it exists.
TEST(VmGatheringTest, RendezvousByName) {
  const std::string name = RendezvousName(getpid(), 12345);
  EXPECT_NE(name, RendezvousName(getpid(), 12346));
  EXPECT_NE(GatheringName(getpid(), 1), GatheringName(getpid(), 2));
  EXPECT_FALSE(ConnectTo(name));
  {
    UniqueFd listener = ListenAt(name).value();
    EXPECT_FALSE(ListenAt(name));  // taken
    UniqueFd client = ConnectTo(name).value();
    UniqueFd server = AcceptWithin(listener.get(), milliseconds(1000)).value();
    GatherMessage m;
    m.type = GatherMessage::kRegister;
    m.pid = 3;
    ASSERT_TRUE(SendGatherMessage(client.get(), m));
    EXPECT_EQ(ReceiveGatherMessage(server.get(), GatherMessage::kRegister, milliseconds(1000))
                  .value()
                  .pid,
              3);
    EXPECT_FALSE(AcceptWithin(listener.get(), milliseconds(20)));  // nobody else
  }
  EXPECT_FALSE(ConnectTo(name));  // gone with its listener
}

}  // namespace
}  // namespace flurry
