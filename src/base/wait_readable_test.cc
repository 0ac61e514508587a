#include "base/wait_readable.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include "base/unique_fd.h"

namespace flurry {
namespace {

TEST(WaitReadable, TimesOutThenSeesDataAndEndOfFile) {
  int p[2];
  ASSERT_EQ(pipe(p), 0);
  UniqueFd reader(p[0]), writer(p[1]);
  const auto soon = [] { return std::chrono::steady_clock::now() + std::chrono::milliseconds(20); };
  auto quiet = WaitReadable(reader.get(), soon(), "a quiet pipe");
  ASSERT_FALSE(quiet);
  EXPECT_EQ(quiet.error().code(), ETIMEDOUT);
  ASSERT_EQ(write(writer.get(), "x", 1), 1);
  // Ready: passes even with its deadline gone.
  EXPECT_TRUE(WaitReadable(reader.get(), std::chrono::steady_clock::now(), "a pipe with data"));
  char c;
  ASSERT_EQ(read(reader.get(), &c, 1), 1);
  writer.Reset();
  EXPECT_TRUE(WaitReadable(reader.get(), soon(), "a pipe at end of file"));
}

}  // namespace
}  // namespace flurry
