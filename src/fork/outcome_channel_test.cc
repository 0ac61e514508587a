#include "fork/outcome_channel.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <thread>

#include "flurry/sf_abi.h"

namespace flurry {
namespace {

struct Pair {
  int fd[2];
  Pair() { EXPECT_EQ(socketpair(AF_UNIX, SOCK_STREAM, 0, fd), 0); }
  ~Pair() {
    close(fd[0]);
    if (fd[1] >= 0) close(fd[1]);
  }
  void CloseWriter() {
    close(fd[1]);
    fd[1] = -1;
  }
};

TEST(OutcomeChannel, RoundTripsAResultBlob) {
  Pair p;
  CloneOutcome sent{SF_OUTCOME_EXITED, 7, 0, std::vector<uint8_t>(300000)};
  for (size_t i = 0; i < sent.result.size(); ++i) sent.result[i] = static_cast<uint8_t>(i * 7);
  std::thread writer([&] { ASSERT_TRUE(SendOutcome(p.fd[1], sent).has_value()); });
  auto got = ReceiveOutcome(p.fd[0]);
  writer.join();
  ASSERT_TRUE(got.has_value()) << got.error().message();
  EXPECT_EQ(got->kind, SF_OUTCOME_EXITED);
  EXPECT_EQ(got->status, 7);
  EXPECT_EQ(got->result, sent.result);
}

// What a channel carried, read to its end (as flurryd buffers a remote clone's channel).
std::vector<uint8_t> Drain(const CloneOutcome& outcome) {
  Pair p;
  std::thread writer([&] { ASSERT_TRUE(SendOutcome(p.fd[1], outcome).has_value()); });
  std::vector<uint8_t> bytes;
  uint8_t chunk[65536];
  size_t expected = 32 + outcome.result.size();
  while (bytes.size() < expected) {
    ssize_t n = read(p.fd[0], chunk, sizeof chunk);
    if (n <= 0) break;
    bytes.insert(bytes.end(), chunk, chunk + n);
  }
  writer.join();
  return bytes;
}

TEST(OutcomeChannel, DecodesAWholeChannel) {
  CloneOutcome sent{SF_OUTCOME_SIGNALED, 0, 11, {1, 2, 3, 4, 5}};
  std::vector<uint8_t> bytes = Drain(sent);
  auto got = DecodeOutcome(bytes);
  ASSERT_TRUE(got.has_value()) << got.error().message();
  EXPECT_EQ(got->kind, SF_OUTCOME_SIGNALED);
  EXPECT_EQ(got->signal, 11);
  EXPECT_EQ(got->result, sent.result);
  EXPECT_LE(bytes.size(), MaxOutcomeBytes());

  auto lost = DecodeOutcome({});
  ASSERT_TRUE(lost.has_value());
  EXPECT_EQ(lost->kind, SF_OUTCOME_LOST);
  // Cut short, with bytes added, or with a flipped result byte: an error, never an outcome.
  std::vector<uint8_t> cut(bytes.begin(), bytes.end() - 1);
  EXPECT_FALSE(DecodeOutcome(cut).has_value());
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  EXPECT_FALSE(DecodeOutcome(longer).has_value());
  std::vector<uint8_t> flipped = bytes;
  flipped.back() ^= 1;
  EXPECT_FALSE(DecodeOutcome(flipped).has_value());
  std::vector<uint8_t> header_only(bytes.begin(), bytes.begin() + 10);
  EXPECT_FALSE(DecodeOutcome(header_only).has_value());
}

TEST(OutcomeChannel, EofIsLost) {
  Pair p;
  p.CloseWriter();
  auto got = ReceiveOutcome(p.fd[0]);
  ASSERT_TRUE(got.has_value());
  EXPECT_EQ(got->kind, SF_OUTCOME_LOST);
}

TEST(OutcomeChannel, RejectsGarbageAndOversizeClaims) {
  {
    Pair p;
    const char junk[32] = "this is not an outcome at all..";
    ASSERT_EQ(write(p.fd[1], junk, sizeof junk), 32);
    EXPECT_FALSE(ReceiveOutcome(p.fd[0]).has_value());
  }
  {
    Pair p;
    uint8_t header[32] = {};
    uint32_t magic = 0x4f594c46;
    uint16_t version = 1, kind = SF_OUTCOME_EXITED;
    uint64_t huge = 1ULL << 40;
    std::memcpy(header, &magic, 4);
    std::memcpy(header + 4, &version, 2);
    std::memcpy(header + 6, &kind, 2);
    std::memcpy(header + 16, &huge, 8);
    ASSERT_EQ(write(p.fd[1], header, sizeof header), 32);
    auto got = ReceiveOutcome(p.fd[0]);
    ASSERT_FALSE(got.has_value());
    EXPECT_NE(got.error().message().find("exceeds the cap"), std::string::npos);
  }
  {
    Pair p;  // truncated mid-header
    const char part[10] = {0x46, 0x4c, 0x59, 0x4f};
    ASSERT_EQ(write(p.fd[1], part, sizeof part), 10);
    p.CloseWriter();
    EXPECT_FALSE(ReceiveOutcome(p.fd[0]).has_value());
  }
}

TEST(OutcomeChannel, DetectsCorruptResult) {
  Pair p;
  CloneOutcome sent{SF_OUTCOME_EXITED, 0, 0, {1, 2, 3, 4}};
  ASSERT_TRUE(SendOutcome(p.fd[1], sent).has_value());
  // Rewrite: read the message, flip a result byte, send it again.
  uint8_t buffer[36];
  ASSERT_EQ(read(p.fd[0], buffer, sizeof buffer), 36);
  buffer[33] ^= 0xff;
  ASSERT_EQ(write(p.fd[1], buffer, sizeof buffer), 36);
  auto got = ReceiveOutcome(p.fd[0]);
  ASSERT_FALSE(got.has_value());
  EXPECT_NE(got.error().message().find("checksum"), std::string::npos);
}

}  // namespace
}  // namespace flurry
