// The guest's /dev (guest/dev_files.h) in the path syscalls: open, the stat family, access and
// readlink of /dev/null and its kin, /dev/stdin, /dev/fd/N, ... — whatever --dir holds, and
// without one.
#include <sys/sysmacros.h>

#include "guest/dev_files.h"
#include "guest/syscalls_file_support.h"

namespace flurry::file_syscalls {
namespace {

// lstat of a /dev symlink (/dev/stdin, /dev/fd), or stat of the /dev/fd directory: made up,
// as nothing on the host stands for them.
struct stat MadeUpStat(bool link, size_t link_size) {
  struct stat st {};
  st.st_mode = link ? (S_IFLNK | 0777) : (S_IFDIR | 0500);
  st.st_nlink = link ? 1 : 2;
  st.st_size = link ? static_cast<off_t>(link_size) : 0;
  st.st_blksize = 4096;
  return st;
}

Result<const OpenFile*> FdOf(const SyscallContext& context, const DevicePath& device) {
  auto file = context.state.fds.Get(device.guest_fd);
  if (!file) return FailErrno(ENOENT, "no such fd");
  return *file;
}

}  // namespace

std::optional<DevicePath> DeviceArg(const SyscallContext& context, int dirfd,
                                    std::string_view path) {
  return DeviceAt(path, dirfd == AT_FDCWD, context.state.fds.cwd_path());
}

Value OpenDevice(SyscallContext& context, const DevicePath& device, int flags) {
  FdTable& fds = context.state.fds;
  const bool cloexec = (flags & O_CLOEXEC) != 0;
  switch (device.kind) {
    case DevicePath::kNoTerminal:
      return FailErrno(ENXIO, "the guest has no controlling terminal");
    case DevicePath::kFdDirectory:
      return FailErrno(ENOENT, "/dev/fd cannot be listed");
    case DevicePath::kGuestFd: {
      // As Linux's /proc/self/fd/N reopens N's file; here it shares N's open file, with what
      // the open asks of the file itself: O_EXCL (it exists), O_NOFOLLOW (a link), O_TRUNC.
      const OpenFile* file = FLURRY_TRY(FdOf(context, device));
      if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL)) return FailErrno(EEXIST, "open");
      if ((flags & O_NOFOLLOW) != 0 && !device.link_target.empty()) {
        return FailErrno(ELOOP, "open");
      }
      if ((flags & O_TRUNC) != 0 && (flags & O_ACCMODE) != O_RDONLY &&
          file->kind == FileKind::kRegular && ftruncate(file->host_fd(), 0) != 0) {
        return HostError("ftruncate");
      }
      return FLURRY_TRY(fds.Dup(device.guest_fd, 0, cloexec));
    }
    case DevicePath::kHostDevice:
      break;
  }
  if (fds.OpenCount() >= FdTable::kMaxFds) return FailErrno(EMFILE, "guest fd table full");
  if ((flags & (O_CREAT | O_EXCL)) == (O_CREAT | O_EXCL)) return FailErrno(EEXIST, "open");
  if ((flags & O_TMPFILE) == O_TMPFILE) return FailErrno(ENOTDIR, "open");
  UniqueFd host = FLURRY_TRY(OpenHostDevice(device.host_path, flags));
  OpenFile file;
  file.kind = FileKind::kDevice;
  file.path = device.host_path;
  file.flags =
      (flags & HostDir::kGuestOpenFlags & ~(O_CLOEXEC | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC)) |
      HostDir::kKernelLargefile;
  file.host = std::move(host);
  return FLURRY_TRY(fds.Install(std::move(file), cloexec));
}

Result<struct stat> StatDevice(const SyscallContext& context, const DevicePath& device,
                               bool follow) {
  struct stat st {};
  switch (device.kind) {
    case DevicePath::kNoTerminal:
      return FailErrno(ENOENT, "/dev/tty");  // no terminal, hence no such device
    case DevicePath::kFdDirectory:
      return MadeUpStat(!follow, device.link_target.size());
    case DevicePath::kGuestFd: {
      const OpenFile* file = FLURRY_TRY(FdOf(context, device));
      if (!follow && !device.link_target.empty())
        return MadeUpStat(true, device.link_target.size());
      if (fstat(file->host_fd(), &st) != 0) return HostError("fstat");
      return st;
    }
    case DevicePath::kHostDevice:
      if (stat(device.host_path.c_str(), &st) != 0) return HostError(device.host_path);
      return st;
  }
  return FailErrno(ENOENT, "device");
}

Result<struct statx> StatxDevice(const SyscallContext& context, const DevicePath& device,
                                 bool follow, uint32_t mask) {
  struct statx stx {};
  if (device.kind == DevicePath::kHostDevice) {
    if (statx(AT_FDCWD, device.host_path.c_str(), 0, mask, &stx) != 0) {
      return HostError(device.host_path);
    }
    return stx;
  }
  if (device.kind == DevicePath::kGuestFd && (follow || device.link_target.empty())) {
    const OpenFile* file = FLURRY_TRY(FdOf(context, device));
    if (statx(file->host_fd(), "", AT_EMPTY_PATH, mask, &stx) != 0) return HostError("statx");
    return stx;
  }
  const struct stat st = FLURRY_TRY(StatDevice(context, device, follow));
  stx.stx_mask = STATX_TYPE | STATX_MODE | STATX_NLINK | STATX_SIZE;
  stx.stx_mode = static_cast<uint16_t>(st.st_mode);
  stx.stx_nlink = static_cast<uint32_t>(st.st_nlink);
  stx.stx_size = static_cast<uint64_t>(st.st_size);
  stx.stx_blksize = static_cast<uint32_t>(st.st_blksize);
  return stx;
}

Result<void> AccessDevice(const SyscallContext& context, const DevicePath& device, int mode,
                          int flags) {
  switch (device.kind) {
    case DevicePath::kNoTerminal:
      return FailErrno(ENOENT, "/dev/tty");
    case DevicePath::kFdDirectory:
      if ((mode & W_OK) != 0) return FailErrno(EACCES, "/dev/fd");
      return {};
    case DevicePath::kGuestFd: {
      const OpenFile* file = FLURRY_TRY(FdOf(context, device));
      if (syscall(SYS_faccessat2, file->host_fd(), "", mode,
                  AT_EMPTY_PATH | (flags & AT_EACCESS)) != 0) {
        return HostError("access");
      }
      return {};
    }
    case DevicePath::kHostDevice:
      if (syscall(SYS_faccessat2, AT_FDCWD, device.host_path.c_str(), mode, flags & AT_EACCESS) !=
          0) {
        return HostError(device.host_path);
      }
      return {};
  }
  return {};
}

Result<std::string> ReadlinkDevice(const DevicePath& device) {
  if (device.link_target.empty()) return FailErrno(EINVAL, "not a symlink");
  return device.link_target;
}

}  // namespace flurry::file_syscalls
