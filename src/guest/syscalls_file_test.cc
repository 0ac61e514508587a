// The file syscalls driven the way the VMM drives them: through a SyscallTable, with a real
// GuestMemory for guest pointers and a GuestState holding the fd table. Operations on paths:
// syscalls_path_test.cc.
#include "guest/syscalls_file_test_support.h"

namespace flurry {
namespace {

using namespace file_test;
namespace fs = std::filesystem;

TEST_F(FileSyscallsTest, OpenReadClose) {
  UseRoot(false);
  int64_t fd = Open("/file.txt", O_RDONLY);
  ASSERT_EQ(fd, 3);
  EXPECT_EQ(ReadFd(fd), "hello");
  EXPECT_EQ(ReadFd(fd), "");  // EOF
  EXPECT_EQ(Sys(SYS_close, fd), 0);
  EXPECT_EQ(Sys(SYS_close, fd), -EBADF);
  EXPECT_EQ(Sys(SYS_read, fd, Alloc(8), 8), -EBADF);

  int64_t fd2 = Sys(SYS_open, Str("sub/inner.txt"), O_RDONLY, 0);
  ASSERT_EQ(fd2, 3);  // lowest free again
  EXPECT_EQ(ReadFd(fd2), "inner");
  const OpenFile* file = *state_.fds.Get(3);
  EXPECT_EQ(file->kind, FileKind::kRegular);
  EXPECT_EQ(file->path, "/sub/inner.txt");
  EXPECT_EQ(Open("/nope", O_RDONLY), -ENOENT);
  EXPECT_EQ(Open("", O_RDONLY), -ENOENT);
  // The symlink climbs out of the root: it means /secret inside it, which does not exist.
  EXPECT_EQ(Open("link", O_RDONLY), -ENOENT);
  EXPECT_EQ(Open("/../secret", O_RDONLY), -ENOENT);
  EXPECT_EQ(Open("/", O_RDONLY | O_DIRECTORY), 4);
}

TEST_F(FileSyscallsTest, WriteLseekPreadPwriteFstat) {
  UseRoot(true);
  int64_t fd = Open("new.txt", O_RDWR | O_CREAT | O_EXCL, 0640);
  ASSERT_GE(fd, 3);
  EXPECT_EQ(Sys(SYS_write, fd, Str("abcdef"), 6), 6);
  EXPECT_EQ(Sys(SYS_lseek, fd, 1, SEEK_SET), 1);
  EXPECT_EQ(ReadFd(fd, 3), "bcd");
  EXPECT_EQ(Sys(SYS_lseek, fd, 0, SEEK_CUR), 4);
  EXPECT_EQ(Sys(SYS_lseek, fd, 0, 99), -EINVAL);
  EXPECT_EQ(Sys(SYS_pwrite64, fd, Str("Z"), 1, 10), 1);
  uint64_t buf = Alloc(4);
  EXPECT_EQ(Sys(SYS_pread64, fd, buf, 4, 9), 2);
  EXPECT_EQ(Bytes(buf, 2), std::string("\0Z", 2));
  EXPECT_EQ(Sys(SYS_pread64, fd, buf, 4, static_cast<uint64_t>(-1)), -EINVAL);
  EXPECT_EQ(Sys(SYS_lseek, fd, 0, SEEK_CUR), 4);  // pread/pwrite keep the offset
  EXPECT_EQ(Sys(SYS_lseek, fd, 0, SEEK_END), 11);

  uint64_t st_addr = Alloc(sizeof(struct stat));
  ASSERT_EQ(Sys(SYS_fstat, fd, st_addr), 0);
  auto st = Object<struct stat>(st_addr);
  struct stat host {};
  ASSERT_EQ(stat((root_ / "new.txt").c_str(), &host), 0);
  EXPECT_EQ(st.st_ino, host.st_ino);
  EXPECT_EQ(st.st_size, 11);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(Sys(SYS_close, fd), 0);
  EXPECT_EQ(HostRead(root_ / "new.txt"), std::string("abcdef\0\0\0\0Z", 11));

  // Zero-length I/O checks the fd but not the buffer.
  EXPECT_EQ(Sys(SYS_write, 1, 0, 0), 0);
  EXPECT_EQ(Sys(SYS_read, 99, 0, 0), -EBADF);
}

TEST_F(FileSyscallsTest, ReadvWritev) {
  UseRoot(true);
  int64_t fd = Open("/v.txt", O_RDWR | O_CREAT | O_TRUNC, 0644);
  ASSERT_GE(fd, 3);
  uint64_t iov = Alloc(3 * sizeof(iovec));
  uint64_t parts[3] = {Str("one "), Str(""), Str("two")};
  uint64_t lens[3] = {4, 0, 3};
  for (int i = 0; i < 3; ++i) {
    ASSERT_TRUE(memory_->WriteObject(iov + i * 16, parts[i]).has_value());
    ASSERT_TRUE(memory_->WriteObject(iov + i * 16 + 8, lens[i]).has_value());
  }
  EXPECT_EQ(Sys(SYS_writev, fd, iov, 3), 7);
  EXPECT_EQ(HostRead(root_ / "v.txt"), "one two");
  ASSERT_EQ(Sys(SYS_lseek, fd, 0, SEEK_SET), 0);
  uint64_t a = Alloc(2), b = Alloc(16);
  ASSERT_TRUE(memory_->WriteObject(iov, a).has_value());
  ASSERT_TRUE(memory_->WriteObject(iov + 8, uint64_t{2}).has_value());
  ASSERT_TRUE(memory_->WriteObject(iov + 16, b).has_value());
  ASSERT_TRUE(memory_->WriteObject(iov + 24, uint64_t{16}).has_value());
  EXPECT_EQ(Sys(SYS_readv, fd, iov, 2), 7);
  EXPECT_EQ(Bytes(a, 2), "on");
  EXPECT_EQ(Bytes(b, 5), "e two");
  EXPECT_EQ(Sys(SYS_readv, fd, iov, 0), 0);
  EXPECT_EQ(Sys(SYS_writev, fd, iov, 1025), -EINVAL);
  // A bad iovec array or a bad buffer inside one.
  EXPECT_EQ(Sys(SYS_writev, fd, 0, 1), -EFAULT);
  EXPECT_EQ(Sys(SYS_writev, fd, kMemorySize - 8, 1), -EFAULT);
  ASSERT_TRUE(memory_->WriteObject(iov, uint64_t{0x1000}).has_value());
  EXPECT_EQ(Sys(SYS_readv, fd, iov, 1), -EFAULT);
  ASSERT_TRUE(memory_->WriteObject(iov + 8, uint64_t{1} << 63).has_value());
  EXPECT_EQ(Sys(SYS_readv, fd, iov, 1), -EINVAL);
}

TEST_F(FileSyscallsTest, DupSharesTheOffset) {
  UseRoot(false);
  int64_t fd = Open("file.txt", O_RDONLY);
  int64_t copy = Sys(SYS_dup, fd);
  ASSERT_EQ(copy, fd + 1);
  EXPECT_EQ(ReadFd(fd, 2), "he");
  EXPECT_EQ(ReadFd(copy, 2), "ll");
  EXPECT_EQ(Sys(SYS_dup2, fd, 10), 10);
  EXPECT_EQ(ReadFd(10, 2), "o");
  EXPECT_EQ(Sys(SYS_dup2, fd, fd), fd);
  EXPECT_EQ(Sys(SYS_dup2, 99, 10), -EBADF);
  EXPECT_EQ(Sys(SYS_dup3, fd, fd, 0), -EINVAL);
  EXPECT_EQ(Sys(SYS_dup3, fd, 11, O_NONBLOCK), -EINVAL);
  EXPECT_EQ(Sys(SYS_dup3, fd, 11, O_CLOEXEC), 11);
  EXPECT_EQ(Sys(SYS_fcntl, 11, F_GETFD), FD_CLOEXEC);
  EXPECT_EQ(Sys(SYS_dup, 99), -EBADF);
  // Closing the original keeps the host file open for the copies.
  EXPECT_EQ(Sys(SYS_close, fd), 0);
  EXPECT_EQ(Sys(SYS_lseek, copy, 0, SEEK_SET), 0);
  EXPECT_EQ(ReadFd(copy), "hello");
}

TEST_F(FileSyscallsTest, Fcntl) {
  UseRoot(true);
  int64_t fd = Open("file.txt", O_WRONLY | O_CLOEXEC);
  ASSERT_GE(fd, 3);
  EXPECT_EQ(Sys(SYS_fcntl, fd, F_GETFD), FD_CLOEXEC);
  EXPECT_EQ(Sys(SYS_fcntl, fd, F_SETFD, 0), 0);
  EXPECT_EQ(Sys(SYS_fcntl, fd, F_GETFD), 0);
  EXPECT_EQ(Sys(SYS_fcntl, fd, F_GETFL) & (O_ACCMODE | O_APPEND), O_WRONLY);
  // O_APPEND set later reaches the host fd: the next write lands at the end.
  EXPECT_EQ(Sys(SYS_fcntl, fd, F_SETFL, O_APPEND | O_RDONLY), 0);
  EXPECT_EQ(Sys(SYS_fcntl, fd, F_GETFL) & (O_ACCMODE | O_APPEND), O_WRONLY | O_APPEND);
  EXPECT_EQ(Sys(SYS_write, fd, Str("!"), 1), 1);
  EXPECT_EQ(HostRead(root_ / "file.txt"), "hello!");
  EXPECT_EQ(Sys(SYS_fcntl, fd, F_DUPFD, 10), 10);
  EXPECT_EQ(Sys(SYS_fcntl, fd, F_DUPFD_CLOEXEC, 10), 11);
  EXPECT_EQ(Sys(SYS_fcntl, 11, F_GETFD), FD_CLOEXEC);
  EXPECT_EQ(Sys(SYS_fcntl, fd, F_DUPFD, FdTable::kMaxFds), -EINVAL);
  EXPECT_EQ(Sys(SYS_fcntl, fd, F_SETLK, 0), -EINVAL);
  EXPECT_EQ(Sys(SYS_fcntl, 99, F_GETFD), -EBADF);
}

TEST_F(FileSyscallsTest, BadPointersAreEfault) {
  UseRoot(true);
  int64_t fd = Open("file.txt", O_RDWR);
  ASSERT_GE(fd, 3);
  // Paths: NULL, the system area, a string running off the end of memory, too long.
  EXPECT_EQ(Sys(SYS_openat, AT_FDCWD, 0, O_RDONLY), -EFAULT);
  EXPECT_EQ(Sys(SYS_open, 0x5000, O_RDONLY), -EFAULT);
  std::memset(memory_->host_base() + kMemorySize - 4, 'a', 4);
  EXPECT_EQ(Sys(SYS_open, kMemorySize - 4, O_RDONLY), -EFAULT);
  EXPECT_EQ(Sys(SYS_open, kMemorySize, O_RDONLY), -EFAULT);
  EXPECT_EQ(Sys(SYS_open, ~0ULL, O_RDONLY), -EFAULT);
  EXPECT_EQ(Sys(SYS_open, Str(std::string(5000, 'x')), O_RDONLY), -ENAMETOOLONG);
  EXPECT_EQ(Sys(SYS_stat, 0, Alloc(144)), -EFAULT);
  EXPECT_EQ(Sys(SYS_unlink, 0), -EFAULT);
  EXPECT_EQ(Sys(SYS_mkdir, 8, 0755), -EFAULT);
  EXPECT_EQ(Sys(SYS_readlink, 0, Alloc(16), 16), -EFAULT);
  EXPECT_EQ(Sys(SYS_access, 0, R_OK), -EFAULT);
  EXPECT_EQ(Sys(SYS_chdir, 0), -EFAULT);
  // Buffers: NULL, crossing the end of memory, absurd lengths.
  EXPECT_EQ(Sys(SYS_read, fd, 0, 5), -EFAULT);
  EXPECT_EQ(Sys(SYS_read, fd, kMemorySize - 2, 5), -EFAULT);
  EXPECT_EQ(Sys(SYS_read, fd, x86::kUserBase, ~0ULL), -EFAULT);
  EXPECT_EQ(Sys(SYS_write, fd, kMemorySize - 2, 5), -EFAULT);
  EXPECT_EQ(Sys(SYS_write, 1, 0x1000, 5), -EFAULT);
  EXPECT_EQ(Sys(SYS_pwrite64, fd, 0, 5, 0), -EFAULT);
  EXPECT_EQ(Sys(SYS_fstat, fd, 0), -EFAULT);
  EXPECT_EQ(Sys(SYS_fstat, fd, kMemorySize - 100), -EFAULT);
  EXPECT_EQ(Sys(SYS_newfstatat, AT_FDCWD, Str("file.txt"), kMemorySize - 8, 0), -EFAULT);
  EXPECT_EQ(Sys(SYS_statx, AT_FDCWD, Str("file.txt"), 0, STATX_BASIC_STATS, 0), -EFAULT);
  EXPECT_EQ(Sys(SYS_getcwd, 0, 100), -EFAULT);
  EXPECT_EQ(Sys(SYS_readlink, Str("/proc/self/exe"), kMemorySize - 2, 64), -EFAULT);
  EXPECT_EQ(Sys(SYS_ioctl, fd, FIONCLEX, 0), 0);
  // Nothing above changed the file.
  EXPECT_EQ(HostRead(root_ / "file.txt"), "hello");
}

TEST_F(FileSyscallsTest, BadFdsAreEbadf) {
  UseRoot(false);
  uint64_t buf = Alloc(64);
  // Linux takes fds as 32-bit ints: (1 << 32) + 5 is fd 5.
  for (uint64_t fd :
       {uint64_t{5}, uint64_t{1023}, uint64_t{1024}, ~uint64_t{0}, (uint64_t{1} << 32) + 5}) {
    EXPECT_EQ(Sys(SYS_read, fd, buf, 8), -EBADF);
    EXPECT_EQ(Sys(SYS_write, fd, buf, 8), -EBADF);
    EXPECT_EQ(Sys(SYS_pread64, fd, buf, 8, 0), -EBADF);
    EXPECT_EQ(Sys(SYS_lseek, fd, 0, SEEK_SET), -EBADF);
    EXPECT_EQ(Sys(SYS_fstat, fd, buf), -EBADF);
    EXPECT_EQ(Sys(SYS_close, fd), -EBADF);
    EXPECT_EQ(Sys(SYS_dup, fd), -EBADF);
    EXPECT_EQ(Sys(SYS_fcntl, fd, F_GETFL), -EBADF);
    EXPECT_EQ(Sys(SYS_ioctl, fd, TCGETS, buf), -EBADF);
    EXPECT_EQ(Sys(SYS_getdents64, fd, buf, 64), -EBADF);
    EXPECT_EQ(Sys(SYS_openat, fd, Str("file.txt"), O_RDONLY), -EBADF);
    EXPECT_EQ(Sys(SYS_fchdir, fd), -EBADF);
  }
  // A directory fd that is not a directory.
  int64_t file = Open("file.txt", O_RDONLY);
  EXPECT_EQ(Open("x", O_RDONLY, 0, static_cast<int>(file)), -ENOTDIR);
  EXPECT_EQ(Sys(SYS_fchdir, file), -ENOTDIR);
}

TEST_F(FileSyscallsTest, OpenFailsWithEmfileBeforeCreating) {
  UseRoot(true);
  while (Sys(SYS_dup, 1) >= 0) {
  }
  EXPECT_EQ(Sys(SYS_dup, 1), -EMFILE);
  EXPECT_EQ(Open("new.txt", O_WRONLY | O_CREAT, 0644), -EMFILE);
  EXPECT_FALSE(fs::exists(root_ / "new.txt"));
  EXPECT_EQ(Sys(SYS_close_range, 3, ~0u, 0), 0);
  EXPECT_EQ(state_.fds.OpenCount(), 3);
  EXPECT_EQ(Sys(SYS_close_range, 5, 3, 0), -EINVAL);
  EXPECT_EQ(Sys(SYS_close_range, 3, 5, 0x1), -EINVAL);
}

TEST_F(FileSyscallsTest, IoctlOnlyAnswersForHostTerminals) {
  UseRoot(false);
  uint64_t buf = Alloc(64);
  int64_t file = Open("file.txt", O_RDONLY);
  EXPECT_EQ(Sys(SYS_ioctl, file, TCGETS, buf), -ENOTTY);
  EXPECT_EQ(Sys(SYS_ioctl, file, TIOCGWINSZ, buf), -ENOTTY);
  EXPECT_EQ(Sys(SYS_ioctl, file, FIOCLEX, 0), 0);
  EXPECT_EQ(Sys(SYS_fcntl, file, F_GETFD), FD_CLOEXEC);
  EXPECT_EQ(Sys(SYS_ioctl, 1, TIOCSWINSZ, buf), -ENOTTY);

  // A stdio entry backed by a host pty answers with the host's values.
  int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
  if (master < 0) GTEST_SKIP() << "no pty available";
  UniqueFd master_fd(master);
  ASSERT_EQ(grantpt(master), 0);
  ASSERT_EQ(unlockpt(master), 0);
  UniqueFd slave(open(ptsname(master), O_RDWR | O_NOCTTY | O_CLOEXEC));
  ASSERT_TRUE(slave.valid());
  winsize size{};
  size.ws_row = 42;
  size.ws_col = 117;
  ASSERT_EQ(ioctl(slave.get(), TIOCSWINSZ, &size), 0);
  OpenFile tty;
  tty.kind = FileKind::kStdio;
  tty.stdio_fd = slave.get();
  tty.flags = O_RDWR;
  int fd = *state_.fds.Install(std::move(tty), false);
  ASSERT_EQ(Sys(SYS_ioctl, fd, TIOCGWINSZ, buf), 0);
  EXPECT_EQ(Object<winsize>(buf).ws_row, 42);
  EXPECT_EQ(Object<winsize>(buf).ws_col, 117);
  ASSERT_EQ(Sys(SYS_ioctl, fd, TCGETS, buf), 0);
  termios host{};
  ASSERT_EQ(tcgetattr(slave.get(), &host), 0);
  EXPECT_EQ(Object<uint32_t>(buf + 12), host.c_lflag);
  EXPECT_EQ(Sys(SYS_ioctl, fd, TCGETS, kMemorySize - 4), -EFAULT);
  EXPECT_EQ(Sys(SYS_ioctl, fd, 0x5401 + 0x100, buf), -ENOTTY);
  EXPECT_EQ(Sys(SYS_close, fd), 0);
  EXPECT_GE(fcntl(slave.get(), F_GETFD), 0);  // borrowed: still open on the host
}

TEST_F(FileSyscallsTest, StdioWritesLoopUntilEverythingIsWritten) {
  // A non-blocking host pipe standing in for stdout: the pipe takes 64 KiB at a time.
  int fds[2];
  ASSERT_EQ(pipe2(fds, O_CLOEXEC), 0);
  UniqueFd read_end(fds[0]), write_end(fds[1]);
  ASSERT_EQ(fcntl(write_end.get(), F_SETFL, O_NONBLOCK), 0);
  OpenFile out;
  out.kind = FileKind::kStdio;
  out.stdio_fd = write_end.get();
  out.flags = O_WRONLY;
  ASSERT_TRUE(state_.fds.DupTo(0, 1, false).has_value());  // drop the real stdout entry
  state_.fds.Install(std::move(out), false).value();       // lands at fd 3
  ASSERT_TRUE(state_.fds.DupTo(3, 1, false).has_value());

  constexpr uint64_t kSize = 1 << 20;
  uint64_t data = Alloc(kSize);
  for (uint64_t i = 0; i < kSize; ++i) memory_->host_base()[data + i] = static_cast<uint8_t>(i * 7);
  std::string received;
  std::thread reader([&] {
    char buf[65536];
    ssize_t n;
    while ((n = read(read_end.get(), buf, sizeof(buf))) > 0) received.append(buf, n);
  });
  EXPECT_EQ(Sys(SYS_write, 1, data, kSize), static_cast<int64_t>(kSize));
  state_.fds.CloseRange(0, ~0u, false);
  write_end.Reset();
  reader.join();
  ASSERT_EQ(received.size(), kSize);
  EXPECT_EQ(received, Bytes(data, kSize));
}

TEST_F(FileSyscallsTest, SyscallsAreRegistered) {
  for (uint64_t nr :
       {SYS_read,   SYS_write,    SYS_readv,       SYS_writev,   SYS_pread64,   SYS_pwrite64,
        SYS_openat, SYS_open,     SYS_close,       SYS_lseek,    SYS_fstat,     SYS_newfstatat,
        SYS_stat,   SYS_lstat,    SYS_getdents64,  SYS_unlinkat, SYS_unlink,    SYS_mkdirat,
        SYS_mkdir,  SYS_rmdir,    SYS_fcntl,       SYS_dup,      SYS_dup2,      SYS_dup3,
        SYS_ioctl,  SYS_readlink, SYS_readlinkat,  SYS_access,   SYS_faccessat, SYS_faccessat2,
        SYS_getcwd, SYS_chdir,    SYS_close_range, SYS_pipe,     SYS_pipe2}) {
    EXPECT_NE(Sys(nr, 999, 0, 0, 0, 0, 0), -ENOSYS) << nr;
  }
}

}  // namespace
}  // namespace flurry
