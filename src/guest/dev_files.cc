#include "guest/dev_files.h"

#include <fcntl.h>
#include <sys/stat.h>

#include <array>
#include <charconv>
#include <vector>

namespace flurry {
namespace {

constexpr std::array<std::string_view, 5> kHostDevices = {"null", "zero", "full", "random",
                                                          "urandom"};

// "/a/./b//../c" -> {"a", "c"}: the components of an absolute path, read lexically.
std::vector<std::string_view> Components(std::string_view path) {
  std::vector<std::string_view> parts;
  while (!path.empty()) {
    const size_t slash = path.find('/');
    const std::string_view part = path.substr(0, slash);
    path = slash == std::string_view::npos ? std::string_view() : path.substr(slash + 1);
    if (part.empty() || part == ".") continue;
    if (part == "..") {
      if (!parts.empty()) parts.pop_back();
      continue;
    }
    parts.push_back(part);
  }
  return parts;
}

std::optional<int> FdNumber(std::string_view text) {
  int fd = -1;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), fd);
  if (error != std::errc() || end != text.data() + text.size() || fd < 0) return std::nullopt;
  if (text.size() > 1 && text[0] == '0') return std::nullopt;  // "/dev/fd/01" is no link
  return fd;
}

DevicePath GuestFd(int fd, std::string link) {
  return DevicePath{.kind = DevicePath::kGuestFd,
                    .host_path = "",
                    .guest_fd = fd,
                    .link_target = std::move(link)};
}

}  // namespace

std::optional<DevicePath> DeviceAt(std::string_view path, bool relative_to_cwd,
                                   std::string_view cwd) {
  if (path.empty()) return std::nullopt;
  std::string absolute;
  if (path[0] == '/') {
    absolute = path;
  } else if (relative_to_cwd) {
    absolute = std::string(cwd) + "/" + std::string(path);
  } else {
    return std::nullopt;
  }
  // A trailing slash asks for a directory: none of these is one but /dev/fd.
  const bool wants_directory = absolute.back() == '/';
  const std::vector<std::string_view> parts = Components(absolute);
  if (parts.size() < 2 || parts[0] != "dev") return std::nullopt;
  const std::string_view name = parts[1];
  if (parts.size() == 2) {
    if (name == "fd") {
      return DevicePath{.kind = DevicePath::kFdDirectory,
                        .host_path = "",
                        .guest_fd = -1,
                        .link_target = "/proc/self/fd"};
    }
    if (wants_directory) return std::nullopt;
    for (std::string_view device : kHostDevices) {
      if (name == device) {
        return DevicePath{.kind = DevicePath::kHostDevice,
                          .host_path = "/dev/" + std::string(device),
                          .guest_fd = -1,
                          .link_target = ""};
      }
    }
    if (name == "stdin") return GuestFd(0, "/proc/self/fd/0");
    if (name == "stdout") return GuestFd(1, "/proc/self/fd/1");
    if (name == "stderr") return GuestFd(2, "/proc/self/fd/2");
    if (name == "tty") {
      return DevicePath{
          .kind = DevicePath::kNoTerminal, .host_path = "", .guest_fd = -1, .link_target = ""};
    }
    return std::nullopt;
  }
  if (parts.size() == 3 && name == "fd" && !wants_directory) {
    if (const std::optional<int> fd = FdNumber(parts[2])) return GuestFd(*fd, "");
  }
  return std::nullopt;
}

bool IsHostDevicePath(std::string_view guest_path) {
  for (std::string_view device : kHostDevices) {
    if (guest_path.size() == device.size() + 5 && guest_path.starts_with("/dev/") &&
        guest_path.substr(5) == device) {
      return true;
    }
  }
  return false;
}

Result<UniqueFd> OpenHostDevice(const std::string& host_path, int guest_flags) {
  if (!IsHostDevicePath(host_path)) return FailErrno(EACCES, host_path + " is no guest device");
  constexpr int kKept = O_ACCMODE | O_APPEND | O_NONBLOCK | O_DSYNC | O_SYNC | O_NOCTTY |
                        O_NOATIME | O_PATH | O_DIRECTORY;
  UniqueFd fd(open(host_path.c_str(), (guest_flags & kKept) | O_NOFOLLOW | O_CLOEXEC));
  if (!fd.valid()) return FailErrno(errno, host_path);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0 || !S_ISCHR(st.st_mode)) {
    return FailErrno(EACCES, host_path + " is no character device on this host");
  }
  return fd;
}

}  // namespace flurry
