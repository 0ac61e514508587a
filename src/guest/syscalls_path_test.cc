// The path syscalls (syscalls_path.cc) driven as the VMM drives them, inside a host
// directory serving as the guest's root: stat, getdents64, dirfds, the working directory,
// readlink of /proc/self/exe, read-only and writable roots.
#include "guest/syscalls_file_test_support.h"

namespace flurry {
namespace {

using namespace file_test;
namespace fs = std::filesystem;

TEST_F(FileSyscallsTest, StatFamily) {
  UseRoot(false);
  struct stat host {};
  ASSERT_EQ(stat((root_ / "sub/inner.txt").c_str(), &host), 0);
  uint64_t st = Alloc(sizeof(struct stat));
  EXPECT_EQ(Sys(SYS_stat, Str("/sub/inner.txt"), st), 0);
  EXPECT_EQ(Object<struct stat>(st).st_ino, host.st_ino);
  EXPECT_EQ(Object<struct stat>(st).st_size, 5);
  EXPECT_EQ(Sys(SYS_lstat, Str("link"), st), 0);
  EXPECT_TRUE(S_ISLNK(Object<struct stat>(st).st_mode));
  EXPECT_EQ(Sys(SYS_stat, Str("link"), st), -ENOENT);  // its target is outside

  int64_t dir = Open("sub", O_RDONLY | O_DIRECTORY);
  ASSERT_GE(dir, 3);
  EXPECT_EQ(Sys(SYS_newfstatat, dir, Str("inner.txt"), st, 0), 0);
  EXPECT_EQ(Object<struct stat>(st).st_ino, host.st_ino);
  EXPECT_EQ(Sys(SYS_newfstatat, dir, Str(""), st, AT_EMPTY_PATH), 0);
  EXPECT_TRUE(S_ISDIR(Object<struct stat>(st).st_mode));
  EXPECT_EQ(Sys(SYS_newfstatat, dir, 0, st, AT_EMPTY_PATH), 0);
  EXPECT_EQ(Sys(SYS_newfstatat, dir, Str(""), st, 0), -ENOENT);
  EXPECT_EQ(Sys(SYS_newfstatat, dir, Str("x"), st, 0x8000000), -EINVAL);
  EXPECT_EQ(Sys(SYS_newfstatat, 99, Str("x"), st, 0), -EBADF);
  EXPECT_EQ(Sys(SYS_newfstatat, 1, Str("x"), st, 0), -ENOTDIR);
  EXPECT_EQ(Sys(SYS_newfstatat, 99, Str("/file.txt"), st, 0), 0);  // absolute: dirfd unused
  EXPECT_EQ(Sys(SYS_newfstatat, AT_FDCWD, Str(""), st, AT_EMPTY_PATH), 0);  // the cwd

  uint64_t stx = Alloc(sizeof(struct statx));
  EXPECT_EQ(Sys(SYS_statx, AT_FDCWD, Str("file.txt"), 0, STATX_BASIC_STATS, stx), 0);
  EXPECT_EQ(Object<struct statx>(stx).stx_size, 5u);
  EXPECT_EQ(Sys(SYS_statx, dir, Str("inner.txt"), AT_SYMLINK_NOFOLLOW, STATX_INO, stx), 0);
  EXPECT_EQ(Object<struct statx>(stx).stx_ino, host.st_ino);
  EXPECT_EQ(Sys(SYS_statx, AT_FDCWD, Str("file.txt"), 0, STATX__RESERVED, stx), -EINVAL);
}

TEST_F(FileSyscallsTest, Getdents64ListsCreatedFiles) {
  UseRoot(true);
  std::set<std::string> expected = {".", "..", "file.txt", "sub", "link"};
  for (int i = 0; i < 200; ++i) {
    std::string name = "created_" + std::to_string(i);
    int64_t fd = Open(name, O_WRONLY | O_CREAT, 0644);
    ASSERT_GE(fd, 3);
    ASSERT_EQ(Sys(SYS_close, fd), 0);
    expected.insert(name);
  }
  ASSERT_EQ(Sys(SYS_mkdir, Str("made"), 0755), 0);
  expected.insert("made");

  int64_t dir = Open("/", O_RDONLY | O_DIRECTORY);
  ASSERT_GE(dir, 3);
  std::set<std::string> seen;
  constexpr uint64_t kBufSize = 1024;  // several calls needed
  uint64_t buf = Alloc(kBufSize);
  for (int calls = 0;; ++calls) {
    ASSERT_LT(calls, 100);
    int64_t n = Sys(SYS_getdents64, dir, buf, kBufSize);
    ASSERT_GE(n, 0);
    if (n == 0) break;
    for (int64_t pos = 0; pos < n;) {
      auto reclen = Object<uint16_t>(buf + pos + 16);
      ASSERT_GT(reclen, 0);
      seen.insert(
          std::string(reinterpret_cast<const char*>(memory_->host_base() + buf + pos + 19)));
      pos += reclen;
    }
  }
  EXPECT_EQ(seen, expected);

  int64_t file = Open("file.txt", O_RDONLY);
  EXPECT_EQ(Sys(SYS_getdents64, file, buf, kBufSize), -ENOTDIR);
  EXPECT_EQ(Sys(SYS_getdents64, 1, buf, kBufSize), -ENOTDIR);
  EXPECT_EQ(Sys(SYS_getdents64, 99, buf, kBufSize), -EBADF);
  EXPECT_EQ(Sys(SYS_getdents64, dir, kMemorySize - 100, kBufSize), -EFAULT);
  EXPECT_EQ(Sys(SYS_lseek, dir, 0, SEEK_SET), 0);
  EXPECT_EQ(Sys(SYS_getdents64, dir, buf, 8), -EINVAL);  // too small for one entry
}

TEST_F(FileSyscallsTest, DirectoryFdsResolveInsideTheRoot) {
  UseRoot(true);
  int64_t sub = Open("/sub", O_RDONLY | O_DIRECTORY);
  ASSERT_GE(sub, 3);
  int64_t inner = Open("inner.txt", O_RDONLY, 0, static_cast<int>(sub));
  ASSERT_GE(inner, 3);
  EXPECT_EQ(ReadFd(inner), "inner");
  int64_t up = Open("../file.txt", O_RDONLY, 0, static_cast<int>(sub));
  ASSERT_GE(up, 3);
  EXPECT_EQ(ReadFd(up), "hello");
  EXPECT_EQ((*state_.fds.Get(static_cast<int>(up)))->path, "/file.txt");
  EXPECT_EQ(Open("../../../secret", O_RDONLY, 0, static_cast<int>(sub)), -ENOENT);
  EXPECT_EQ(Open("../link", O_RDONLY, 0, static_cast<int>(sub)), -ENOENT);
  EXPECT_EQ(Sys(SYS_mkdirat, sub, Str("deeper"), 0700), 0);
  EXPECT_TRUE(fs::is_directory(root_ / "sub/deeper"));
  EXPECT_EQ(Sys(SYS_unlinkat, sub, Str("deeper"), 0), -EISDIR);
  EXPECT_EQ(Sys(SYS_unlinkat, sub, Str("deeper"), AT_REMOVEDIR), 0);
  EXPECT_EQ(Sys(SYS_unlinkat, sub, Str("inner.txt"), 0x1), -EINVAL);
  EXPECT_EQ(Sys(SYS_unlinkat, sub, Str("../../secret"), 0), -ENOENT);
  EXPECT_EQ(Sys(SYS_renameat, sub, Str("inner.txt"), AT_FDCWD, Str("/moved.txt")), 0);
  EXPECT_TRUE(fs::exists(root_ / "moved.txt"));
  EXPECT_EQ(Sys(SYS_readlinkat, sub, Str("../link"), Alloc(16), 16), 9);
  EXPECT_TRUE(fs::exists(top_ / "secret"));
}

TEST_F(FileSyscallsTest, ChdirAndGetcwd) {
  UseRoot(false);
  uint64_t buf = Alloc(64);
  EXPECT_EQ(Sys(SYS_getcwd, buf, 64), 2);
  EXPECT_EQ(Bytes(buf, 2), std::string("/\0", 2));
  EXPECT_EQ(Sys(SYS_chdir, Str("sub")), 0);
  EXPECT_EQ(Sys(SYS_getcwd, buf, 64), 5);
  EXPECT_EQ(Bytes(buf, 5), std::string("/sub\0", 5));
  EXPECT_EQ(Sys(SYS_getcwd, buf, 4), -ERANGE);
  int64_t inner = Open("inner.txt", O_RDONLY);
  ASSERT_GE(inner, 3);
  EXPECT_EQ(ReadFd(inner), "inner");
  EXPECT_EQ(Sys(SYS_access, Str("inner.txt"), R_OK), 0);
  EXPECT_EQ(Sys(SYS_chdir, Str("../../..")), 0);
  EXPECT_EQ(Sys(SYS_getcwd, buf, 64), 2);
  EXPECT_EQ(Sys(SYS_chdir, Str("file.txt")), -ENOTDIR);
  EXPECT_EQ(Sys(SYS_chdir, Str("nope")), -ENOENT);
  int64_t sub = Open("sub", O_RDONLY | O_DIRECTORY);
  EXPECT_EQ(Sys(SYS_fchdir, sub), 0);
  EXPECT_EQ(Sys(SYS_getcwd, buf, 64), 5);
  EXPECT_EQ(Sys(SYS_newfstatat, AT_FDCWD, Str("inner.txt"), Alloc(144), 0), 0);
}

TEST_F(FileSyscallsTest, WithoutARootPathsDoNotExist) {
  uint64_t st = Alloc(sizeof(struct stat));
  EXPECT_EQ(Open("/file.txt", O_RDONLY), -ENOENT);
  EXPECT_EQ(Open(root_.string() + "/file.txt", O_RDONLY), -ENOENT);
  EXPECT_EQ(Sys(SYS_stat, Str("/"), st), -ENOENT);
  EXPECT_EQ(Sys(SYS_access, Str("/etc/passwd"), F_OK), -ENOENT);
  EXPECT_EQ(Sys(SYS_unlink, Str("/x")), -ENOENT);
  EXPECT_EQ(Sys(SYS_mkdir, Str("/x"), 0755), -ENOENT);
  EXPECT_EQ(Sys(SYS_readlink, Str("/x"), Alloc(8), 8), -ENOENT);
  EXPECT_EQ(Sys(SYS_chdir, Str("/tmp")), -ENOENT);
  EXPECT_EQ(Sys(SYS_chdir, Str("/")), 0);
  uint64_t buf = Alloc(8);
  EXPECT_EQ(Sys(SYS_getcwd, buf, 8), 2);
  EXPECT_EQ(Bytes(buf, 1), "/");
  // fds still work.
  EXPECT_EQ(Sys(SYS_fstat, 2, st), 0);
  EXPECT_EQ(Sys(SYS_newfstatat, 2, Str(""), st, AT_EMPTY_PATH), 0);
  EXPECT_EQ(Sys(SYS_dup, 2), 3);
}

TEST_F(FileSyscallsTest, ReadlinkProcSelfExe) {
  uint64_t buf = Alloc(64);
  EXPECT_EQ(Sys(SYS_readlink, Str("/proc/self/exe"), buf, 64), 12);
  EXPECT_EQ(Bytes(buf, 13), std::string("/bin/program\0", 13));  // no NUL written
  EXPECT_EQ(Sys(SYS_readlink, Str("/proc/self/exe"), buf, 4), 4);
  EXPECT_EQ(Bytes(buf, 4), "/bin");
  EXPECT_EQ(Sys(SYS_readlinkat, AT_FDCWD, Str("/proc/self/exe"), buf, 64), 12);
  EXPECT_EQ(Sys(SYS_readlink, Str("/proc/self/exe"), buf, 0), -EINVAL);
  UseRoot(false);
  EXPECT_EQ(Sys(SYS_readlink, Str("/proc/self/exe"), buf, 64), 12);
  EXPECT_EQ(Sys(SYS_readlink, Str("/link"), buf, 64), 9);
  EXPECT_EQ(Bytes(buf, 9), "../secret");
  EXPECT_EQ(Sys(SYS_readlink, Str("/file.txt"), buf, 64), -EINVAL);
}

TEST_F(FileSyscallsTest, ReadOnlyRootRefusesWrites) {
  UseRoot(false);
  EXPECT_EQ(Open("file.txt", O_WRONLY), -EROFS);
  EXPECT_EQ(Open("file.txt", O_RDWR), -EROFS);
  EXPECT_EQ(Open("new.txt", O_WRONLY | O_CREAT, 0644), -EROFS);
  EXPECT_EQ(Open("file.txt", O_RDONLY | O_TRUNC), -EROFS);
  EXPECT_EQ(Sys(SYS_unlink, Str("file.txt")), -EROFS);
  EXPECT_EQ(Sys(SYS_rmdir, Str("sub")), -EROFS);
  EXPECT_EQ(Sys(SYS_mkdir, Str("d"), 0755), -EROFS);
  EXPECT_EQ(Sys(SYS_rename, Str("file.txt"), Str("x")), -EROFS);
  EXPECT_EQ(Sys(SYS_access, Str("file.txt"), W_OK), -EROFS);
  EXPECT_EQ(Sys(SYS_access, Str("file.txt"), R_OK), 0);
  EXPECT_EQ(Sys(SYS_faccessat2, AT_FDCWD, Str("file.txt"), R_OK, AT_SYMLINK_NOFOLLOW), 0);
  EXPECT_EQ(Sys(SYS_faccessat2, AT_FDCWD, Str("file.txt"), R_OK, 0x1000000), -EINVAL);
  EXPECT_EQ(Sys(SYS_faccessat, AT_FDCWD, Str("file.txt"), 8), -EINVAL);
  EXPECT_EQ(HostRead(root_ / "file.txt"), "hello");
  EXPECT_FALSE(fs::exists(root_ / "new.txt"));
}

TEST_F(FileSyscallsTest, ReadWriteRootPathOperations) {
  UseRoot(true);
  EXPECT_EQ(Sys(SYS_mkdir, Str("/d"), 0705), 0);
  struct stat st {};
  ASSERT_EQ(stat((root_ / "d").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0705u);
  EXPECT_EQ(Sys(SYS_mkdir, Str("/d"), 0705), -EEXIST);
  EXPECT_EQ(Sys(SYS_rename, Str("file.txt"), Str("d/f")), 0);
  EXPECT_EQ(HostRead(root_ / "d/f"), "hello");
  EXPECT_EQ(Sys(SYS_rmdir, Str("d")), -ENOTEMPTY);
  EXPECT_EQ(Sys(SYS_unlink, Str("d/f")), 0);
  EXPECT_EQ(Sys(SYS_rmdir, Str("d")), 0);
  EXPECT_FALSE(fs::exists(root_ / "d"));
  EXPECT_EQ(Sys(SYS_unlink, Str("link")), 0);
  EXPECT_TRUE(fs::exists(top_ / "secret"));
  EXPECT_EQ(Sys(SYS_renameat2, AT_FDCWD, Str("sub"), AT_FDCWD, Str("s2"), 0x4), -EINVAL);

  int64_t fd = Open("t.txt", O_RDWR | O_CREAT, 0600);
  ASSERT_GE(fd, 3);
  EXPECT_EQ(Sys(SYS_write, fd, Str("0123456789"), 10), 10);
  EXPECT_EQ(Sys(SYS_ftruncate, fd, 4), 0);
  EXPECT_EQ(Sys(SYS_fsync, fd), 0);
  EXPECT_EQ(Sys(SYS_fdatasync, fd), 0);
  EXPECT_EQ(HostRead(root_ / "t.txt"), "0123");
}

}  // namespace
}  // namespace flurry
