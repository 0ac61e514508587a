#include "base/fd_passing.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <string>

#include "base/test_seqpacket_pair.h"

namespace flurry {
namespace {

std::span<const uint8_t> Bytes(const std::string& text) {
  return {reinterpret_cast<const uint8_t*>(text.data()), text.size()};
}

TEST(FdPassing, DescriptorsArriveWithTheirMessage) {
  TestSeqpacketPair s;
  int pipe_fds[2];
  ASSERT_EQ(pipe2(pipe_fds, O_CLOEXEC), 0);
  UniqueFd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
  const int sent[] = {read_end.get(), write_end.get()};
  ASSERT_TRUE(SendWithFds(s.a.get(), Bytes("two ends"), sent).has_value());
  uint8_t buffer[64];
  std::vector<UniqueFd> fds;
  auto n = ReceiveWithFds(s.b.get(), buffer, &fds);
  ASSERT_TRUE(n.has_value()) << n.error().message();
  EXPECT_EQ(std::string(reinterpret_cast<char*>(buffer), *n), "two ends");
  ASSERT_EQ(fds.size(), 2u);
  EXPECT_EQ(fcntl(fds[0].get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  // They are the same pipe: bytes written to the received end come out of the original.
  ASSERT_EQ(write(fds[1].get(), "x", 1), 1);
  char c = 0;
  ASSERT_EQ(read(read_end.get(), &c, 1), 1);
  EXPECT_EQ(c, 'x');
}

TEST(FdPassing, TooManyDescriptorsOrBytesAreRefused) {
  TestSeqpacketPair s;
  std::vector<int> many(kMaxFdsPerMessage + 1, s.a.get());
  auto refused = SendWithFds(s.a.get(), Bytes("x"), many);
  ASSERT_FALSE(refused.has_value());
  EXPECT_EQ(refused.error().code(), EMSGSIZE);
  EXPECT_EQ(SendWithFds(s.a.get(), {}, {}).error().code(), EINVAL);
  // A message longer than the buffer: refused, and its descriptors are still owned (closed).
  const int one[] = {s.a.get()};
  ASSERT_TRUE(SendWithFds(s.a.get(), Bytes("a long message"), one).has_value());
  uint8_t small[4];
  std::vector<UniqueFd> fds;
  auto n = ReceiveWithFds(s.b.get(), small, &fds);
  ASSERT_FALSE(n.has_value());
  EXPECT_EQ(n.error().code(), EMSGSIZE);
  EXPECT_EQ(fds.size(), 1u);
}

TEST(FdPassing, APeerThatIsGoneIsEofOrEpipe) {
  TestSeqpacketPair s;
  s.b.Reset();
  auto sent = SendWithFds(s.a.get(), Bytes("x"), {});
  ASSERT_FALSE(sent.has_value());
  EXPECT_EQ(sent.error().code(), EPIPE);
  TestSeqpacketPair t;
  t.a.Reset();
  uint8_t buffer[8];
  std::vector<UniqueFd> fds;
  auto n = ReceiveWithFds(t.b.get(), buffer, &fds);
  ASSERT_TRUE(n.has_value());
  EXPECT_EQ(*n, 0u);
}

}  // namespace
}  // namespace flurry
