#include "fork/standin_job.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "base/test_seqpacket_pair.h"

namespace flurry {
namespace {

ino_t Inode(int fd) {
  struct stat st {};
  EXPECT_EQ(fstat(fd, &st), 0);
  return st.st_ino;
}

// More descriptors than one message carries: they arrive in order, with the arguments.
TEST(StandInJob, ArgumentsAndManyDescriptorsArriveInOrder) {
  TestSeqpacketPair s;
  std::vector<UniqueFd> pipes;
  std::vector<int> fds;
  for (int i = 0; i < 300; ++i) {
    int p[2];
    ASSERT_EQ(pipe2(p, O_CLOEXEC), 0);
    pipes.emplace_back(p[0]);
    pipes.emplace_back(p[1]);
    fds.push_back(p[i % 2]);
  }
  const std::vector<std::string> args = {"--family", "1f", "--host", "host1", "", "--count", "7"};
  // The receiver runs beside: 300 descriptors fill more than the socket's queue holds at once.
  Result<StandInJob> received;
  std::thread receiver([&] { received = ReceiveStandInJob(s.b.get()); });
  auto sent = SendStandInJob(s.a.get(), args, fds);
  receiver.join();
  ASSERT_TRUE(sent.has_value()) << sent.error().message();
  ASSERT_TRUE(received.has_value()) << received.error().message();
  EXPECT_EQ(received->args, args);
  ASSERT_EQ(received->fds.size(), fds.size());
  for (size_t i = 0; i < fds.size(); ++i) {
    EXPECT_EQ(Inode(received->fds[i].get()), Inode(fds[i])) << i;
  }
}

TEST(StandInJob, NoJobIsConnectionReset) {
  TestSeqpacketPair s;
  s.a.Reset();
  auto job = ReceiveStandInJob(s.b.get());
  ASSERT_FALSE(job.has_value());
  EXPECT_EQ(job.error().code(), ECONNRESET);
}

// A damaged first message is refused: wrong magic, arguments that do not match the checksum.
TEST(StandInJob, DamagedJobsAreRefused) {
  for (size_t flip : {size_t{0}, size_t{24}}) {
    TestSeqpacketPair s;
    TestSeqpacketPair capture;
    ASSERT_TRUE(SendStandInJob(capture.a.get(), {"--host", "h"}, {}).has_value());
    uint8_t bytes[256];
    const ssize_t n = recv(capture.b.get(), bytes, sizeof bytes, 0);
    ASSERT_GT(n, 24);
    bytes[flip] ^= 0x20;
    ASSERT_EQ(send(s.a.get(), bytes, static_cast<size_t>(n), 0), n);
    auto job = ReceiveStandInJob(s.b.get());
    EXPECT_FALSE(job.has_value()) << flip;
  }
  // A job without arguments (not even argv[0]) is refused, and cannot be sent.
  {
    TestSeqpacketPair s;
    const uint8_t header[24] = {
        'F', 'L', 'S', 'J', 1,    0,    0,    0,    0,    0,    0,    0,
        0,   0,   0,   0,   0x25, 0x23, 0x22, 0x84, 0xe4, 0x9c, 0xf2, 0xcb};  // fnv1a64("")
    ASSERT_EQ(send(s.a.get(), header, sizeof header, 0), 24);
    auto job = ReceiveStandInJob(s.b.get());
    ASSERT_FALSE(job.has_value());
    EXPECT_NE(job.error().message().find("without arguments"), std::string::npos)
        << job.error().message();
    EXPECT_FALSE(SendStandInJob(s.a.get(), {}, {}).has_value());
  }
  // Arguments with a NUL byte cannot be sent.
  TestSeqpacketPair s;
  EXPECT_FALSE(SendStandInJob(s.a.get(), {std::string("a\0b", 3)}, {}).has_value());
}

// The spare's "ready": said once, waited for with a limit; EOF, silence and other bytes are not
// ready.
TEST(StandInJob, TheSparesReadyMessage) {
  using std::chrono::steady_clock;
  {
    TestSeqpacketPair s;
    ASSERT_TRUE(SendSpareReady(s.b.get()));
    EXPECT_TRUE(ReceiveSpareReady(s.a.get(), steady_clock::now() + std::chrono::seconds(5)));
  }
  {
    TestSeqpacketPair s;
    auto silent = ReceiveSpareReady(s.a.get(), steady_clock::now() + std::chrono::milliseconds(20));
    ASSERT_FALSE(silent);
    EXPECT_EQ(silent.error().code(), ETIMEDOUT);
    s.b.Reset();
    auto ended = ReceiveSpareReady(s.a.get(), steady_clock::now() + std::chrono::seconds(5));
    ASSERT_FALSE(ended);
    EXPECT_EQ(ended.error().code(), ECONNRESET);
  }
  {
    TestSeqpacketPair s;
    const char other[8] = {'F', 'L', 'S', 'J', 1, 0, 0, 0};
    ASSERT_EQ(send(s.b.get(), other, sizeof other, 0), 8);
    auto wrong = ReceiveSpareReady(s.a.get(), steady_clock::now() + std::chrono::seconds(5));
    ASSERT_FALSE(wrong);
    EXPECT_EQ(wrong.error().code(), EPROTO);
  }
}

}  // namespace
}  // namespace flurry
