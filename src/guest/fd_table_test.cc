#include "guest/fd_table.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <unistd.h>

namespace flurry {
namespace {

// A pipe whose write end the table owns; reading tells whether the write end is still open.
struct Pipe {
  Pipe() {
    int fds[2];
    EXPECT_EQ(pipe2(fds, O_CLOEXEC | O_NONBLOCK), 0);
    read_end.Reset(fds[0]);
    write_end = fds[1];
  }
  // True once every copy of the write end is closed (EOF), false while one is open (EAGAIN).
  bool WriterClosed() const {
    char c;
    return read(read_end.get(), &c, 1) == 0;
  }
  UniqueFd read_end;
  int write_end = -1;  // handed to an OpenFile
};

OpenFile PipeFile(Pipe& pipe) {
  OpenFile file;
  file.kind = FileKind::kOther;
  file.host.Reset(pipe.write_end);
  file.flags = O_WRONLY;
  return file;
}

TEST(FdTableTest, DefaultHasHostStdioAndNoRoot) {
  FdTable fds;
  EXPECT_EQ(fds.OpenCount(), 3);
  EXPECT_EQ(fds.root(), nullptr);
  EXPECT_EQ(fds.cwd_path(), "/");
  EXPECT_EQ(fds.cwd().fd, -1);
  for (int fd = 0; fd < 3; ++fd) {
    Result<OpenFile*> file = fds.Get(fd);
    ASSERT_TRUE(file.has_value());
    EXPECT_EQ((*file)->kind, FileKind::kStdio);
    EXPECT_EQ((*file)->host_fd(), fd);
    EXPECT_FALSE(*fds.GetCloexec(fd));
  }
  EXPECT_EQ(fds.Get(3).error().code(), EBADF);
}

TEST(FdTableTest, ClosingStdioNeverClosesTheHostFds) {
  {
    FdTable fds;
    ASSERT_TRUE(fds.Dup(1, 0, false).has_value());
    for (int fd = 0; fd < 4; ++fd) EXPECT_TRUE(fds.Close(fd).has_value());
    EXPECT_EQ(fds.OpenCount(), 0);
    FdTable moved = std::move(fds);
  }
  {
    FdTable fds;  // destroyed with its stdio entries open
  }
  for (int fd = 0; fd < 3; ++fd) EXPECT_GE(fcntl(fd, F_GETFD), 0) << "host fd " << fd << " closed";
}

TEST(FdTableTest, LowestFreeFdAndEbadf) {
  FdTable fds;
  Pipe a, b, c;
  EXPECT_EQ(*fds.Install(PipeFile(a), false), 3);
  EXPECT_EQ(*fds.Install(PipeFile(b), true), 4);
  EXPECT_TRUE(*fds.GetCloexec(4));
  ASSERT_TRUE(fds.Close(3).has_value());
  EXPECT_EQ(fds.Close(3).error().code(), EBADF);
  EXPECT_TRUE(a.WriterClosed());
  EXPECT_EQ(*fds.Install(PipeFile(c), false), 3);
  ASSERT_TRUE(fds.Close(0).has_value());
  EXPECT_EQ(*fds.Dup(4, 0, false), 0);  // lowest free is 0 now
  for (int bad : {-1, 5, 1000, FdTable::kMaxFds, 1 << 30}) {
    EXPECT_EQ(fds.Get(bad).error().code(), EBADF) << bad;
    EXPECT_EQ(fds.Close(bad).error().code(), EBADF) << bad;
    EXPECT_EQ(fds.Dup(bad, 0, false).error().code(), EBADF) << bad;
    EXPECT_EQ(fds.DupTo(bad, 7, false).error().code(), EBADF) << bad;
    EXPECT_EQ(fds.SetCloexec(bad, true).error().code(), EBADF) << bad;
  }
  EXPECT_EQ(fds.DupTo(1, -1, false).error().code(), EBADF);
  EXPECT_EQ(fds.DupTo(1, FdTable::kMaxFds, false).error().code(), EBADF);
  EXPECT_EQ(fds.Dup(1, FdTable::kMaxFds, false).error().code(), EINVAL);
}

TEST(FdTableTest, DupSharesTheOpenFileUntilTheLastClose) {
  FdTable fds;
  Pipe pipe;
  int fd = *fds.Install(PipeFile(pipe), false);
  int copy = *fds.Dup(fd, 10, true);
  EXPECT_EQ(copy, 10);
  EXPECT_TRUE(*fds.GetCloexec(10));
  EXPECT_FALSE(*fds.GetCloexec(fd));
  EXPECT_EQ(*fds.Get(fd), *fds.Get(copy));  // one open file description
  (*fds.Get(fd))->flags |= O_APPEND;
  EXPECT_TRUE((*fds.Get(copy))->flags & O_APPEND);

  EXPECT_EQ(*fds.DupTo(fd, 20, false), 20);
  EXPECT_EQ(*fds.DupTo(20, 20, false), 20);
  ASSERT_TRUE(fds.Close(fd).has_value());
  ASSERT_TRUE(fds.Close(copy).has_value());
  EXPECT_FALSE(pipe.WriterClosed());
  // dup2 over an open fd closes what it held.
  ASSERT_TRUE(fds.DupTo(1, 20, false).has_value());
  EXPECT_TRUE(pipe.WriterClosed());
  EXPECT_EQ((*fds.Get(20))->kind, FileKind::kStdio);
}

TEST(FdTableTest, EmfileAtTheLimit) {
  FdTable fds;
  for (int fd = 3; fd < FdTable::kMaxFds; ++fd) ASSERT_EQ(*fds.Dup(1, 0, false), fd);
  EXPECT_EQ(fds.OpenCount(), FdTable::kMaxFds);
  EXPECT_EQ(fds.Dup(1, 0, false).error().code(), EMFILE);
  Pipe pipe;
  EXPECT_EQ(fds.Install(PipeFile(pipe), false).error().code(), EMFILE);
  EXPECT_TRUE(pipe.WriterClosed());  // the refused file was not leaked
  ASSERT_TRUE(fds.Close(500).has_value());
  EXPECT_EQ(*fds.Dup(1, 0, false), 500);
  // dup2 to the last slot works when it is free.
  ASSERT_TRUE(fds.Close(FdTable::kMaxFds - 1).has_value());
  EXPECT_EQ(*fds.DupTo(0, FdTable::kMaxFds - 1, false), FdTable::kMaxFds - 1);
}

TEST(FdTableTest, CloseRange) {
  FdTable fds;
  for (int i = 0; i < 7; ++i) ASSERT_TRUE(fds.Dup(1, 0, false).has_value());  // 3..9
  fds.CloseRange(5, 7, /*cloexec_only=*/true);
  EXPECT_TRUE(*fds.GetCloexec(5));
  EXPECT_TRUE(*fds.GetCloexec(7));
  EXPECT_FALSE(*fds.GetCloexec(8));
  fds.CloseRange(4, 6, false);
  EXPECT_TRUE(fds.IsOpen(3));
  EXPECT_FALSE(fds.IsOpen(4));
  EXPECT_FALSE(fds.IsOpen(6));
  EXPECT_TRUE(fds.IsOpen(7));
  fds.CloseRange(3, ~0u, false);
  EXPECT_EQ(fds.OpenCount(), 3);
  EXPECT_EQ(fds.entries().size(), 3u);
}

TEST(FdTableTest, MoveKeepsEntriesAndRoot) {
  FdTable fds;
  Pipe pipe;
  int fd = *fds.Install(PipeFile(pipe), false);
  Result<HostDir> dir = HostDir::Open("/", false);
  ASSERT_TRUE(dir.has_value());
  fds.SetRoot(std::move(*dir));
  FdTable moved(std::move(fds));
  ASSERT_NE(moved.root(), nullptr);
  EXPECT_EQ(moved.root()->host_path(), "/");
  EXPECT_TRUE(moved.IsOpen(fd));
  EXPECT_FALSE(pipe.WriterClosed());
  FdTable assigned;
  assigned = std::move(moved);
  EXPECT_TRUE(assigned.IsOpen(fd));
  ASSERT_TRUE(assigned.Close(fd).has_value());
  EXPECT_TRUE(pipe.WriterClosed());
}

}  // namespace
}  // namespace flurry
