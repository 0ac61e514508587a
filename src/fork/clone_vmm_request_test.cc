#include "fork/clone_vmm_request.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <thread>

#include "fork/outcome_channel.h"

namespace flurry {
namespace {

CloneVmmRequest Sample() {
  return CloneVmmRequest{"/var/lib/flurryd/clones/ab-3-7",
                         std::string(32, 'f'),
                         {"flurry", "restore", "--as-clone", "3", "", "tcp://10.0.0.1:4000"}};
}

TEST(CloneVmmRequest, RoundTripsThroughASocket) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  const CloneVmmRequest sent = Sample();
  ASSERT_TRUE(SendCloneVmmRequest(fds[1], sent));
  close(fds[1]);
  auto got = ReceiveCloneVmmRequest(fds[0]);
  close(fds[0]);
  ASSERT_TRUE(got) << got.error().message();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ((*got)->work_dir, sent.work_dir);
  EXPECT_EQ((*got)->page_key, sent.page_key);
  EXPECT_EQ((*got)->args, sent.args);  // the empty argument too
}

TEST(CloneVmmRequest, LargerThanTheSocketBufferArrivesWhole) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  CloneVmmRequest sent = Sample();
  sent.args.push_back(std::string(60000, 'x'));
  std::thread writer([&] {
    EXPECT_TRUE(SendCloneVmmRequest(fds[1], sent));
    close(fds[1]);
  });
  auto got = ReceiveCloneVmmRequest(fds[0]);
  writer.join();
  close(fds[0]);
  ASSERT_TRUE(got && got->has_value());
  EXPECT_EQ((*got)->args, sent.args);
}

TEST(CloneVmmRequest, EofBeforeAMessageIsNoRequest) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  close(fds[1]);
  auto got = ReceiveCloneVmmRequest(fds[0]);
  close(fds[0]);
  ASSERT_TRUE(got);
  EXPECT_FALSE(got->has_value());
}

TEST(CloneVmmRequest, AReaderGoneIsAnErrorNotASignal) {
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  close(fds[0]);
  auto sent = SendCloneVmmRequest(fds[1], Sample());  // SIGPIPE would end this test program
  close(fds[1]);
  EXPECT_FALSE(sent);
}

TEST(CloneVmmRequest, EofInsideAMessageIsAnError) {
  auto bytes = EncodeCloneVmmRequest(Sample());
  ASSERT_TRUE(bytes);
  int fds[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
  ASSERT_EQ(write(fds[1], bytes->data(), bytes->size() - 3),
            static_cast<ssize_t>(bytes->size() - 3));
  close(fds[1]);
  auto got = ReceiveCloneVmmRequest(fds[0]);
  close(fds[0]);
  EXPECT_FALSE(got);
}

// `bytes` with its checksum made right again after a change to the payload.
std::vector<uint8_t> Resealed(std::vector<uint8_t> bytes) {
  const uint64_t sum = Fnv1a64(bytes.data() + 24, bytes.size() - 24);
  std::memcpy(bytes.data() + 16, &sum, sizeof sum);
  return bytes;
}

TEST(CloneVmmRequest, RefusesDamagedMessages) {
  const std::vector<uint8_t> good = *EncodeCloneVmmRequest(Sample());
  ASSERT_TRUE(DecodeCloneVmmRequest(good));
  auto with = [&](size_t at, uint8_t value) {
    std::vector<uint8_t> bytes = good;
    bytes[at] = value;
    return bytes;
  };
  EXPECT_FALSE(DecodeCloneVmmRequest(with(0, 'X')));                // magic
  EXPECT_FALSE(DecodeCloneVmmRequest(with(4, 9)));                  // version
  EXPECT_FALSE(DecodeCloneVmmRequest(with(6, 1)));                  // fewer than 2 strings
  EXPECT_FALSE(DecodeCloneVmmRequest(with(6, 5)));                  // a count that disagrees
  EXPECT_FALSE(DecodeCloneVmmRequest(with(good.size() - 2, 'Z')));  // checksum
  EXPECT_FALSE(DecodeCloneVmmRequest(with(good.size() - 1, 'Z')));  // last NUL (and checksum)
  // With the checksum right, the string without its NUL is what is refused.
  ASSERT_TRUE(DecodeCloneVmmRequest(Resealed(good)));
  auto no_nul = DecodeCloneVmmRequest(Resealed(with(good.size() - 1, 'Z')));
  ASSERT_FALSE(no_nul);
  EXPECT_NE(no_nul.error().message().find("without its NUL"), std::string::npos)
      << no_nul.error().message();
  std::vector<uint8_t> short_one(good.begin(), good.end() - 1);
  EXPECT_FALSE(DecodeCloneVmmRequest(short_one));
  std::vector<uint8_t> long_one = good;
  long_one.push_back(0);
  EXPECT_FALSE(DecodeCloneVmmRequest(long_one));
  EXPECT_FALSE(DecodeCloneVmmRequest(std::span<const uint8_t>(good.data(), 10)));
  // A payload length over the cap is refused before anything is read for it.
  std::vector<uint8_t> huge = good;
  const uint32_t length = kCloneVmmRequestMaxPayload + 1;
  std::memcpy(huge.data() + 8, &length, sizeof length);
  auto over = DecodeCloneVmmRequest(huge);
  ASSERT_FALSE(over);
  EXPECT_NE(over.error().message().find("exceeds the cap"), std::string::npos)
      << over.error().message();
}

TEST(CloneVmmRequest, RefusesToEncodeWhatItCouldNotDecode) {
  CloneVmmRequest nul = Sample();
  nul.args.push_back(std::string("a\0b", 3));
  EXPECT_FALSE(EncodeCloneVmmRequest(nul));
  CloneVmmRequest many = Sample();
  many.args.resize(kCloneVmmRequestMaxStrings);
  EXPECT_FALSE(EncodeCloneVmmRequest(many));
  CloneVmmRequest big = Sample();
  big.args.push_back(std::string(kCloneVmmRequestMaxPayload, 'x'));
  EXPECT_FALSE(EncodeCloneVmmRequest(big));
}

}  // namespace
}  // namespace flurry
