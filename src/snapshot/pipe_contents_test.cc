#include "snapshot/pipe_contents.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <numeric>
#include <vector>

namespace flurry {
namespace {

struct TestPipe {
  UniqueFd read, write;
  static TestPipe Make(int flags = 0) {
    int ends[2];
    EXPECT_EQ(pipe2(ends, O_CLOEXEC | O_NONBLOCK | flags), 0);
    return TestPipe{UniqueFd(ends[0]), UniqueFd(ends[1])};
  }
};

std::vector<uint8_t> Drain(int fd) {
  std::vector<uint8_t> bytes;
  uint8_t buffer[4096];
  for (;;) {
    const ssize_t n = read(fd, buffer, sizeof buffer);
    if (n <= 0) return bytes;
    bytes.insert(bytes.end(), buffer, buffer + n);
  }
}

TEST(PipeContentsTest, BothEndsNameThePipeAlike) {
  TestPipe a = TestPipe::Make(), b = TestPipe::Make();
  EXPECT_EQ(HostPipeId(a.read.get()).value(), HostPipeId(a.write.get()).value());
  EXPECT_NE(HostPipeId(a.read.get()).value(), HostPipeId(b.read.get()).value());
  UniqueFd file(open("/proc/self/exe", O_RDONLY | O_CLOEXEC));
  EXPECT_FALSE(HostPipeId(file.get()));
}

// Many small writes fill a pipe's slots one each: the copy still takes all of them, from
// either end, and the pipe keeps every byte.
TEST(PipeContentsTest, CapturesEveryByteFromEitherEndAndLeavesThem) {
  TestPipe p = TestPipe::Make();
  std::vector<uint8_t> written;
  for (int i = 0; i < 16; ++i) {
    std::vector<uint8_t> chunk(100 + i, static_cast<uint8_t>('a' + i));
    ASSERT_EQ(write(p.write.get(), chunk.data(), chunk.size()), static_cast<ssize_t>(chunk.size()));
    written.insert(written.end(), chunk.begin(), chunk.end());
  }
  for (int end : {p.read.get(), p.write.get()}) {
    const PipeRecord record = CapturePipe(end, 9).value();
    EXPECT_EQ(record.id, 9u);
    EXPECT_EQ(record.capacity, static_cast<uint32_t>(fcntl(end, F_GETPIPE_SZ)));
    EXPECT_EQ(record.contents, written);
  }
  EXPECT_EQ(Drain(p.read.get()), written);
  EXPECT_TRUE(CapturePipe(p.read.get(), 1).value().contents.empty());
}

TEST(PipeContentsTest, AFullLargePipeMovesWhole) {
  TestPipe p = TestPipe::Make();
  ASSERT_EQ(fcntl(p.write.get(), F_SETPIPE_SZ, 256 << 10), 256 << 10);
  std::vector<uint8_t> bytes(256 << 10);
  std::iota(bytes.begin(), bytes.end(), 0);
  ASSERT_EQ(write(p.write.get(), bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  const PipeRecord record = CapturePipe(p.write.get(), 3).value();
  EXPECT_EQ(record.capacity, 256u << 10);
  ASSERT_EQ(record.contents, bytes);
  PipeEnds made = MakePipe(record, false).value();
  EXPECT_EQ(fcntl(made.write.get(), F_GETPIPE_SZ), 256 << 10);
  EXPECT_EQ(Drain(made.read.get()), bytes);
  EXPECT_NE(fcntl(made.read.get(), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_EQ(fcntl(made.write.get(), F_GETFD), FD_CLOEXEC);
}

TEST(PipeContentsTest, PacketModeIsKeptAndOverfullRecordsRefused) {
  PipeEnds made = MakePipe(PipeRecord{.id = 1, .capacity = 4096, .contents = {}}, true).value();
  EXPECT_NE(fcntl(made.write.get(), F_GETFL) & O_DIRECT, 0);
  PipeRecord overfull{.id = 2, .capacity = 4096, .contents = std::vector<uint8_t>(4097)};
  EXPECT_FALSE(MakePipe(overfull, false));
}

}  // namespace
}  // namespace flurry
