// The fixture of the file syscall tests (syscalls_file_test.cc: fds and I/O;
// syscalls_path_test.cc: operations on paths): a SyscallTable with the file syscalls, a real
// GuestMemory for guest pointers, a GuestState holding the fd table, and a host directory tree
// to serve as the guest's root (with a secret outside it and a symlink pointing there).
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <termios.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <string>
#include <thread>

#include "arch/x86_64/layout.h"
#include "guest/syscall.h"

namespace flurry::file_test {

namespace fs = std::filesystem;

constexpr uint64_t kMemorySize = 16ULL << 20;

inline std::string HostRead(const fs::path& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

class FileSyscallsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    Result<GuestMemory> memory = GuestMemory::Create(kMemorySize);
    ASSERT_TRUE(memory.has_value()) << memory.error().message();
    memory_.emplace(std::move(*memory));
    RegisterFileSyscalls(table_);
    state_.identity.exe_path = "/bin/program";

    char tmpl[] = "/tmp/flurry-files-XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    top_ = tmpl;
    root_ = top_ / "root";
    fs::create_directories(root_ / "sub");
    std::ofstream(root_ / "file.txt") << "hello";
    std::ofstream(root_ / "sub/inner.txt") << "inner";
    std::ofstream(top_ / "secret") << "SECRET";
    fs::create_symlink("../secret", root_ / "link");
  }
  void TearDown() override { fs::remove_all(top_); }

  void UseRoot(bool writable) {
    Result<HostDir> dir = HostDir::Open(root_.string(), writable);
    ASSERT_TRUE(dir.has_value()) << dir.error().message();
    state_.fds.SetRoot(std::move(*dir));
  }

  int64_t Sys(uint64_t nr, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0,
              uint64_t a4 = 0, uint64_t a5 = 0) {
    SyscallContext context{*memory_, state_};
    SyscallArgs args{nr, {a0, a1, a2, a3, a4, a5}};
    SyscallResult result = table_.Dispatch(context, args);
    EXPECT_EQ(result.action, SyscallResult::Action::kReturn);
    return result.value;
  }

  // Guest memory for arguments, handed out upwards from kUserBase.
  uint64_t Alloc(uint64_t size) {
    uint64_t addr = next_;
    next_ = x86::AlignUp(next_ + size, 16);
    EXPECT_LE(next_, kMemorySize);
    std::memset(memory_->host_base() + addr, 0, size);
    return addr;
  }
  uint64_t Str(std::string_view text) {
    uint64_t addr = Alloc(text.size() + 1);
    std::memcpy(memory_->host_base() + addr, text.data(), text.size());
    return addr;
  }
  std::string Bytes(uint64_t addr, size_t len) {
    return std::string(reinterpret_cast<const char*>(memory_->host_base() + addr), len);
  }
  template <typename T>
  T Object(uint64_t addr) {
    T value;
    std::memcpy(&value, memory_->host_base() + addr, sizeof(T));
    return value;
  }

  int64_t Open(std::string_view path, int flags, mode_t mode = 0, int dirfd = AT_FDCWD) {
    return Sys(SYS_openat, static_cast<uint64_t>(dirfd), Str(path), static_cast<uint64_t>(flags),
               mode);
  }
  std::string ReadFd(int64_t fd, size_t max = 256) {
    uint64_t buf = Alloc(max);
    int64_t n = Sys(SYS_read, fd, buf, max);
    EXPECT_GE(n, 0);
    return n < 0 ? "" : Bytes(buf, static_cast<size_t>(n));
  }

  std::optional<GuestMemory> memory_;
  GuestState state_;
  SyscallTable table_;
  uint64_t next_ = x86::kUserBase;
  fs::path top_, root_;
};

}  // namespace flurry::file_test
