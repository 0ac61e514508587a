#include "guest/line_writer.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <string>

namespace flurry {
namespace {

std::string Drain(int fd) {
  std::string out;
  char buffer[4096];
  ssize_t n;
  while ((n = read(fd, buffer, sizeof buffer)) > 0) out.append(buffer, n);
  return out;
}

TEST(LineWriter, EmitsWholePrefixedLines) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_NONBLOCK), 0);
  LineWriter writer(p[1], "[clone 3] ", nullptr, true);
  std::string a = "hel", b = "lo\nwor", c = "ld\npartial";
  iovec iov[3] = {{a.data(), a.size()}, {b.data(), b.size()}, {c.data(), c.size()}};
  EXPECT_EQ(writer.Write(iov), static_cast<int64_t>(a.size() + b.size() + c.size()));
  EXPECT_EQ(Drain(p[0]), "[clone 3] hello\n[clone 3] world\n");
  writer.Flush();
  EXPECT_EQ(Drain(p[0]), "[clone 3] partial");
  close(p[0]);
  close(p[1]);
}

TEST(LineWriter, SplitsOverlongLines) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_NONBLOCK), 0);
  fcntl(p[1], F_SETPIPE_SZ, 1 << 20);
  LineWriter writer(p[1], "", nullptr, true);
  std::string big(LineWriter::kMaxLine + 10, 'x');
  iovec iov{big.data(), big.size()};
  writer.Write({&iov, 1});
  EXPECT_EQ(Drain(p[0]).size(), LineWriter::kMaxLine);
  close(p[0]);
  close(p[1]);
}

TEST(LineWriter, PassThroughWritesAtOnceUnderTheLock) {
  int p[2];
  ASSERT_EQ(pipe2(p, O_NONBLOCK), 0);
  pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
  LineWriter writer(p[1], "ignored", &lock, false);
  std::string a = "no newline";
  iovec iov{a.data(), a.size()};
  EXPECT_EQ(writer.Write({&iov, 1}), static_cast<int64_t>(a.size()));
  EXPECT_EQ(Drain(p[0]), "no newline");
  EXPECT_EQ(pthread_mutex_trylock(&lock), 0);  // released again
  pthread_mutex_unlock(&lock);
  close(p[0]);
  close(p[1]);
}

}  // namespace
}  // namespace flurry
