// The guest's /dev, the same whatever --dir holds (and without one): the paths programs and
// shell scripts take for granted.
//  * /dev/null, /dev/zero, /dev/full, /dev/random, /dev/urandom: the host's own devices, opened
//    for the guest (they hold nothing of the host's; kind kDevice, reopened by path in a
//    restored VM or clone).
//  * /dev/stdin, /dev/stdout, /dev/stderr, /dev/fd/N: the guest's fds 0, 1, 2 and N, as Linux's
//    symlinks into /proc/self/fd.
//  * /dev/tty: the guest has no controlling terminal (ENXIO).
// A path names one of them when it does lexically: absolute, or relative to the working
// directory (AT_FDCWD), after "." and ".." are taken as they read. Pure functions.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "base/error.h"
#include "base/unique_fd.h"

namespace flurry {

struct DevicePath {
  enum Kind { kHostDevice, kGuestFd, kFdDirectory, kNoTerminal } kind = kHostDevice;
  std::string host_path;  // kHostDevice: the host device ("/dev/null")
  int guest_fd = -1;      // kGuestFd: the fd it stands for
  // kGuestFd: the symlink it is (/dev/stdin -> "/proc/self/fd/0"), for readlink and lstat;
  // kFdDirectory: "/proc/self/fd". Empty for /dev/fd/N (a link into /proc itself).
  std::string link_target;
};

// The device `path` names, relative paths starting at `cwd` when `relative_to_cwd` (a *at
// call with AT_FDCWD; other directory fds never reach /dev). nullopt: none of them.
std::optional<DevicePath> DeviceAt(std::string_view path, bool relative_to_cwd,
                                   std::string_view cwd);

// Opens the host device `host_path` (one of IsHostDevicePath's) with the guest's open flags,
// never creating or truncating anything (O_CREAT, O_EXCL, O_TRUNC, O_TMPFILE dropped), and
// only if it is a character device (EACCES otherwise: a host whose /dev lacks it cannot be
// made to open something else). The fd is O_CLOEXEC.
Result<UniqueFd> OpenHostDevice(const std::string& host_path, int guest_flags);

// Whether `guest_path` is a device a descriptor may name (FILE_KIND_DEVICE): the host devices
// above, by their guest path, which is also their host path.
bool IsHostDevicePath(std::string_view guest_path);

}  // namespace flurry
