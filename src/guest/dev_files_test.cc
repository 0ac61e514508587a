#include "guest/dev_files.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>

namespace flurry {
namespace {

TEST(DevFiles, HostDevicesByAbsoluteAndRelativePaths) {
  for (const char* path : {"/dev/null", "//dev/./null", "/tmp/../dev/null", "/../dev/null"}) {
    const auto device = DeviceAt(path, true, "/");
    ASSERT_TRUE(device.has_value()) << path;
    EXPECT_EQ(device->kind, DevicePath::kHostDevice);
    EXPECT_EQ(device->host_path, "/dev/null");
  }
  EXPECT_EQ(DeviceAt("null", true, "/dev")->host_path, "/dev/null");
  EXPECT_EQ(DeviceAt("../dev/zero", true, "/tmp")->host_path, "/dev/zero");
  EXPECT_FALSE(DeviceAt("null", false, "/dev"));  // relative to another directory fd
  EXPECT_FALSE(DeviceAt("null", true, "/"));
  for (const char* name : {"zero", "full", "random", "urandom"}) {
    EXPECT_EQ(DeviceAt(std::string("/dev/") + name, true, "/")->host_path,
              std::string("/dev/") + name);
  }
}

TEST(DevFiles, OnlyTheKnownNames) {
  for (const char* path :
       {"/dev", "/dev/", "/dev/sda", "/dev/mem", "/dev/kvm", "/dev/null/", "/dev/null/x",
        "/devnull", "/dev/fd/x", "/dev/fd/-1", "/dev/fd/01", "/dev/shm/x", "dev/null", ""}) {
    EXPECT_FALSE(DeviceAt(path, false, "/")) << path;
  }
}

TEST(DevFiles, StandardStreamsAndFdLinks) {
  const auto in = DeviceAt("/dev/stdin", true, "/");
  ASSERT_TRUE(in.has_value());
  EXPECT_EQ(in->kind, DevicePath::kGuestFd);
  EXPECT_EQ(in->guest_fd, 0);
  EXPECT_EQ(in->link_target, "/proc/self/fd/0");
  EXPECT_EQ(DeviceAt("/dev/stderr", true, "/")->guest_fd, 2);
  const auto fd7 = DeviceAt("/dev/fd/7", true, "/");
  EXPECT_EQ(fd7->guest_fd, 7);
  EXPECT_EQ(fd7->link_target, "");
  EXPECT_EQ(DeviceAt("/dev/fd", true, "/")->kind, DevicePath::kFdDirectory);
  EXPECT_EQ(DeviceAt("/dev/tty", true, "/")->kind, DevicePath::kNoTerminal);
}

TEST(DevFiles, OpensOnlyHostCharacterDevices) {
  EXPECT_EQ(OpenHostDevice("/dev/mem", O_RDONLY).error().code_or(0), EACCES);
  EXPECT_EQ(OpenHostDevice("/etc/passwd", O_RDONLY).error().code_or(0), EACCES);
  // Creating and truncating flags are dropped: a device is only opened.
  auto null = OpenHostDevice("/dev/null", O_WRONLY | O_CREAT | O_TRUNC | O_EXCL);
  ASSERT_TRUE(null.has_value());
  struct stat st {};
  ASSERT_EQ(fstat(null->get(), &st), 0);
  EXPECT_TRUE(S_ISCHR(st.st_mode));
  EXPECT_EQ(fcntl(null->get(), F_GETFD), FD_CLOEXEC);
}

TEST(DevFiles, DescriptorPaths) {
  EXPECT_TRUE(IsHostDevicePath("/dev/urandom"));
  EXPECT_FALSE(IsHostDevicePath("/dev/mem"));
  EXPECT_FALSE(IsHostDevicePath("/dev/stdin"));
  EXPECT_FALSE(IsHostDevicePath("//dev/null"));
}

}  // namespace
}  // namespace flurry
