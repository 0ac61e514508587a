// The guest's /dev through the syscalls, without a --dir root: open, read and write of the host
// devices, /dev/stdin and /dev/fd/N as the guest's fds, stat, access, readlink.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include <cstring>
#include <string>

#include "guest/syscalls_test_support.h"

namespace flurry {
namespace {

using testing::SyscallHarness;

constexpr uint64_t kPath = SyscallHarness::kScratch;
constexpr uint64_t kBuf = SyscallHarness::kScratch + 0x1000;

class DevSyscalls : public ::testing::Test {
 protected:
  int64_t Open(const std::string& path, int flags) {
    EXPECT_TRUE(h.memory.Write(kPath, path.c_str(), path.size() + 1).has_value());
    return h.Call(SYS_openat, static_cast<uint64_t>(AT_FDCWD), kPath, static_cast<uint64_t>(flags),
                  0644);
  }
  int64_t CallOnPath(uint64_t nr, const std::string& path, uint64_t a1 = 0, uint64_t a2 = 0) {
    EXPECT_TRUE(h.memory.Write(kPath, path.c_str(), path.size() + 1).has_value());
    return h.Call(nr, kPath, a1, a2);
  }
  struct stat Stat(const std::string& path, bool follow = true) {
    EXPECT_EQ(CallOnPath(follow ? SYS_stat : SYS_lstat, path, kBuf), 0) << path;
    return h.memory.ReadObject<struct stat>(kBuf).value();
  }

  SyscallHarness h;  // no root: every other path is ENOENT
};

TEST_F(DevSyscalls, HostDevicesWithoutARoot) {
  const int64_t null = Open("/dev/null", O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC);
  ASSERT_GE(null, 0);
  const OpenFile* file = *h.state.fds.Get(static_cast<int>(null));
  EXPECT_EQ(file->kind, FileKind::kDevice);
  EXPECT_EQ(file->path, "/dev/null");
  EXPECT_EQ(h.Call(SYS_fcntl, static_cast<uint64_t>(null), F_GETFD), FD_CLOEXEC);
  EXPECT_EQ(h.Call(SYS_write, static_cast<uint64_t>(null), kBuf, 100), 100);
  EXPECT_EQ(h.Call(SYS_read, static_cast<uint64_t>(null), kBuf, 100), 0);
  const int64_t zero = Open("/dev/zero", O_RDONLY);
  ASSERT_TRUE(h.memory.Write(kBuf, "xxxx", 4).has_value());
  EXPECT_EQ(h.Call(SYS_read, static_cast<uint64_t>(zero), kBuf, 4), 4);
  EXPECT_EQ(h.memory.ReadObject<uint32_t>(kBuf).value(), 0u);
  const int64_t full = Open("/dev/full", O_WRONLY);
  EXPECT_EQ(h.Call(SYS_write, static_cast<uint64_t>(full), kBuf, 4), -ENOSPC);
  const int64_t random = Open("/dev/urandom", O_RDONLY);
  EXPECT_EQ(h.Call(SYS_read, static_cast<uint64_t>(random), kBuf, 16), 16);
  EXPECT_EQ(Open("/dev/null", O_RDONLY | O_DIRECTORY), -ENOTDIR);
  EXPECT_EQ(Open("/dev/null", O_WRONLY | O_CREAT | O_EXCL), -EEXIST);
  EXPECT_EQ(Open("/dev/tty", O_RDWR), -ENXIO);
  EXPECT_EQ(Open("/dev/sda", O_RDONLY), -ENOENT);  // not one of them: the (missing) root's
  EXPECT_EQ(Open("/etc/passwd", O_RDONLY), -ENOENT);
}

TEST_F(DevSyscalls, StandardStreamsAreTheGuestsFds) {
  const int64_t out = Open("/dev/stdout", O_WRONLY);
  ASSERT_GE(out, 3);
  EXPECT_EQ((*h.state.fds.Get(static_cast<int>(out)))->kind, FileKind::kStdio);
  EXPECT_EQ((*h.state.fds.Get(static_cast<int>(out)))->stdio_fd, 1);
  EXPECT_EQ(Open("/dev/fd/" + std::to_string(out), O_WRONLY), out + 1);
  EXPECT_EQ(Open("/dev/fd/99", O_RDONLY), -ENOENT);
  EXPECT_EQ(Open("/dev/stdout", O_WRONLY | O_NOFOLLOW), -ELOOP);  // a link, as Linux's
  EXPECT_EQ(Open("/dev/stdout", O_WRONLY | O_CREAT | O_EXCL), -EEXIST);
  ASSERT_EQ(h.Call(SYS_close, 0), 0);
  EXPECT_EQ(Open("/dev/stdin", O_RDONLY), -ENOENT);
}

TEST_F(DevSyscalls, StatAccessReadlink) {
  EXPECT_TRUE(S_ISCHR(Stat("/dev/null").st_mode));
  EXPECT_TRUE(S_ISCHR(Stat("/dev/urandom", false).st_mode));
  EXPECT_TRUE(S_ISLNK(Stat("/dev/stdin", false).st_mode));
  EXPECT_TRUE(S_ISDIR(Stat("/dev/fd").st_mode));
  EXPECT_EQ(CallOnPath(SYS_access, "/dev/null", R_OK | W_OK), 0);
  EXPECT_EQ(CallOnPath(SYS_access, "/dev/stderr", F_OK), 0);
  EXPECT_EQ(CallOnPath(SYS_access, "/dev/fd/77", F_OK), -ENOENT);
  EXPECT_EQ(CallOnPath(SYS_readlink, "/dev/stderr", kBuf, 64), 15);
  char target[16] = {};
  ASSERT_TRUE(h.memory.Read(kBuf, target, 15).has_value());
  EXPECT_STREQ(target, "/proc/self/fd/2");
  EXPECT_EQ(CallOnPath(SYS_readlink, "/dev/null", kBuf, 64), -EINVAL);
  // statx too.
  EXPECT_TRUE(h.memory.Write(kPath, "/dev/zero", 10).has_value());
  ASSERT_EQ(h.Call(SYS_statx, static_cast<uint64_t>(AT_FDCWD), kPath, 0, STATX_BASIC_STATS, kBuf),
            0);
  EXPECT_TRUE(S_ISCHR(h.memory.ReadObject<struct statx>(kBuf)->stx_mode));
}

}  // namespace
}  // namespace flurry
