// The path syscalls: metadata, links, access checks, directory changes and the working
// directory, all resolved inside the guest's HostDir. Handlers run on the vCPU thread.
#include "guest/syscalls_file_support.h"

namespace flurry::file_syscalls {
namespace {

Result<std::string> StatPathArg(const GuestMemory& memory, uint64_t addr, int flags) {
  if (addr == 0 && (flags & AT_EMPTY_PATH) != 0) return std::string();
  return PathArg(memory, addr);
}

Value FstatAt(SyscallContext& context, int dirfd, uint64_t path_addr, uint64_t buf, int flags) {
  if ((flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT)) != 0) {
    return FailErrno(EINVAL, "newfstatat flags");
  }
  std::string path = FLURRY_TRY(StatPathArg(context.memory, path_addr, flags));
  const FdTable& fds = context.state.fds;
  struct stat st {};
  if (path.empty() && (flags & AT_EMPTY_PATH) != 0) {
    int fd = FLURRY_TRY(EmptyPathFd(fds, dirfd));
    if (fstat(fd, &st) != 0) return HostError("fstat");
  } else if (const std::optional<DevicePath> device = DeviceArg(context, dirfd, path)) {
    st = FLURRY_TRY(StatDevice(context, *device, (flags & AT_SYMLINK_NOFOLLOW) == 0));
  } else {
    PathRef ref = FLURRY_TRY(PathRefOf(context, dirfd, std::move(path)));
    st = FLURRY_TRY(ref.dir->Stat(ref.base, ref.path, (flags & AT_SYMLINK_NOFOLLOW) == 0));
  }
  FLURRY_TRY(context.memory.WriteObject(buf, st));
  return 0;
}

Value Newfstatat(SyscallContext& context, const SyscallArgs& args) {
  return FstatAt(context, IntArg(args.arg[0]), args.arg[1], args.arg[2], IntArg(args.arg[3]));
}

Value Stat(SyscallContext& context, const SyscallArgs& args) {
  return FstatAt(context, AT_FDCWD, args.arg[0], args.arg[1], 0);
}

Value Lstat(SyscallContext& context, const SyscallArgs& args) {
  return FstatAt(context, AT_FDCWD, args.arg[0], args.arg[1], AT_SYMLINK_NOFOLLOW);
}

Value Statx(SyscallContext& context, const SyscallArgs& args) {
  int dirfd = IntArg(args.arg[0]);
  int flags = IntArg(args.arg[2]);
  auto mask = static_cast<uint32_t>(args.arg[3]);
  if ((flags & ~(AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH | AT_NO_AUTOMOUNT | kStatxSyncType)) != 0 ||
      (flags & kStatxSyncType) == kStatxSyncType || (mask & STATX__RESERVED) != 0) {
    return FailErrno(EINVAL, "statx flags");
  }
  std::string path = FLURRY_TRY(StatPathArg(context.memory, args.arg[1], flags));
  const FdTable& fds = context.state.fds;
  UniqueFd lookup;
  int fd = -1;
  if (path.empty() && (flags & AT_EMPTY_PATH) != 0) {
    fd = FLURRY_TRY(EmptyPathFd(fds, dirfd));
  } else if (const std::optional<DevicePath> device = DeviceArg(context, dirfd, path)) {
    const struct statx stx =
        FLURRY_TRY(StatxDevice(context, *device, (flags & AT_SYMLINK_NOFOLLOW) == 0, mask));
    FLURRY_TRY(context.memory.WriteObject(args.arg[4], stx));
    return 0;
  } else {
    PathRef ref = FLURRY_TRY(PathRefOf(context, dirfd, std::move(path)));
    lookup = FLURRY_TRY(ref.dir->Lookup(ref.base, ref.path, (flags & AT_SYMLINK_NOFOLLOW) == 0));
    fd = lookup.get();
  }
  struct statx stx {};
  if (statx(fd, "", AT_EMPTY_PATH | (flags & kStatxSyncType), mask, &stx) != 0) {
    return HostError("statx");
  }
  FLURRY_TRY(context.memory.WriteObject(args.arg[4], stx));
  return 0;
}

Value ReadlinkAt(SyscallContext& context, int dirfd, uint64_t path_addr, uint64_t buf,
                 uint64_t size_arg) {
  int size = IntArg(size_arg);
  if (size <= 0) return FailErrno(EINVAL, "readlink buffer size");
  std::string path = FLURRY_TRY(PathArg(context.memory, path_addr));
  std::string target;
  if (path == "/proc/self/exe") {
    target = context.state.identity.exe_path;
    if (target.empty()) return FailErrno(ENOENT, path);
  } else if (const std::optional<DevicePath> device = DeviceArg(context, dirfd, path)) {
    target = FLURRY_TRY(ReadlinkDevice(*device));
  } else {
    PathRef ref = FLURRY_TRY(PathRefOf(context, dirfd, std::move(path)));
    target = FLURRY_TRY(ref.dir->Readlink(ref.base, ref.path));
  }
  size_t n = std::min(target.size(), static_cast<size_t>(size));  // not NUL-terminated
  FLURRY_TRY(context.memory.Write(buf, target.data(), n));
  return static_cast<int64_t>(n);
}

Value Readlink(SyscallContext& context, const SyscallArgs& args) {
  return ReadlinkAt(context, AT_FDCWD, args.arg[0], args.arg[1], args.arg[2]);
}

Value Readlinkat(SyscallContext& context, const SyscallArgs& args) {
  return ReadlinkAt(context, IntArg(args.arg[0]), args.arg[1], args.arg[2], args.arg[3]);
}

Value AccessAt(SyscallContext& context, int dirfd, uint64_t path_addr, int mode, int flags) {
  if ((flags & ~(AT_EACCESS | AT_SYMLINK_NOFOLLOW | AT_EMPTY_PATH)) != 0 ||
      (mode & ~(R_OK | W_OK | X_OK)) != 0) {
    return FailErrno(EINVAL, "access");
  }
  std::string path = FLURRY_TRY(PathArg(context.memory, path_addr));
  const FdTable& fds = context.state.fds;
  if (path.empty() && (flags & AT_EMPTY_PATH) != 0) {
    if (dirfd != AT_FDCWD) {
      OpenFile* file = FLURRY_TRY(fds.Get(dirfd));
      if (file->kind != FileKind::kStdio && fds.root() != nullptr && !fds.root()->writable() &&
          (mode & W_OK) != 0) {
        return FailErrno(EROFS, "access");
      }
      if (syscall(SYS_faccessat2, file->host_fd(), "", mode,
                  AT_EMPTY_PATH | (flags & AT_EACCESS)) != 0) {
        return HostError("access");
      }
      return 0;
    }
    path.push_back('.');  // "" with AT_FDCWD: the cwd itself
  }
  if (const std::optional<DevicePath> device = DeviceArg(context, dirfd, path)) {
    FLURRY_TRY(AccessDevice(context, *device, mode, flags));
    return 0;
  }
  PathRef ref = FLURRY_TRY(PathRefOf(context, dirfd, std::move(path)));
  FLURRY_TRY(ref.dir->Access(ref.base, ref.path, mode, flags & ~AT_EMPTY_PATH));
  return 0;
}

Value Access(SyscallContext& context, const SyscallArgs& args) {
  return AccessAt(context, AT_FDCWD, args.arg[0], IntArg(args.arg[1]), 0);
}

Value Faccessat(SyscallContext& context, const SyscallArgs& args) {
  return AccessAt(context, IntArg(args.arg[0]), args.arg[1], IntArg(args.arg[2]), 0);
}

Value Faccessat2(SyscallContext& context, const SyscallArgs& args) {
  return AccessAt(context, IntArg(args.arg[0]), args.arg[1], IntArg(args.arg[2]),
                  IntArg(args.arg[3]));
}

// ---- Directory changes -------------------------------------------------------------------

Value UnlinkAt(SyscallContext& context, int dirfd, uint64_t path_addr, int flags) {
  if ((flags & ~AT_REMOVEDIR) != 0) return FailErrno(EINVAL, "unlinkat flags");
  PathRef ref = FLURRY_TRY(PathAt(context, dirfd, path_addr));
  FLURRY_TRY(ref.dir->Unlink(ref.base, ref.path, (flags & AT_REMOVEDIR) != 0));
  return 0;
}

Value Unlinkat(SyscallContext& context, const SyscallArgs& args) {
  return UnlinkAt(context, IntArg(args.arg[0]), args.arg[1], IntArg(args.arg[2]));
}

Value Unlink(SyscallContext& context, const SyscallArgs& args) {
  return UnlinkAt(context, AT_FDCWD, args.arg[0], 0);
}

Value Rmdir(SyscallContext& context, const SyscallArgs& args) {
  return UnlinkAt(context, AT_FDCWD, args.arg[0], AT_REMOVEDIR);
}

Value MkdirAt(SyscallContext& context, int dirfd, uint64_t path_addr, mode_t mode) {
  PathRef ref = FLURRY_TRY(PathAt(context, dirfd, path_addr));
  FLURRY_TRY(ref.dir->Mkdir(ref.base, ref.path, mode));
  return 0;
}

Value Mkdirat(SyscallContext& context, const SyscallArgs& args) {
  return MkdirAt(context, IntArg(args.arg[0]), args.arg[1], static_cast<mode_t>(args.arg[2]));
}

Value Mkdir(SyscallContext& context, const SyscallArgs& args) {
  return MkdirAt(context, AT_FDCWD, args.arg[0], static_cast<mode_t>(args.arg[1]));
}

Value RenameAt(SyscallContext& context, int old_dirfd, uint64_t old_addr, int new_dirfd,
               uint64_t new_addr, unsigned flags) {
  PathRef from = FLURRY_TRY(PathAt(context, old_dirfd, old_addr));
  PathRef to = FLURRY_TRY(PathAt(context, new_dirfd, new_addr));
  FLURRY_TRY(from.dir->Rename(from.base, from.path, to.base, to.path, flags));
  return 0;
}

Value Rename(SyscallContext& context, const SyscallArgs& args) {
  return RenameAt(context, AT_FDCWD, args.arg[0], AT_FDCWD, args.arg[1], 0);
}

Value Renameat(SyscallContext& context, const SyscallArgs& args) {
  return RenameAt(context, IntArg(args.arg[0]), args.arg[1], IntArg(args.arg[2]), args.arg[3], 0);
}

Value Renameat2(SyscallContext& context, const SyscallArgs& args) {
  return RenameAt(context, IntArg(args.arg[0]), args.arg[1], IntArg(args.arg[2]), args.arg[3],
                  static_cast<uint32_t>(args.arg[4]));
}

// ---- Working directory -------------------------------------------------------------------

Value Getcwd(SyscallContext& context, const SyscallArgs& args) {
  const std::string& cwd = context.state.fds.cwd_path();
  uint64_t needed = cwd.size() + 1;
  if (args.arg[1] < needed) return FailErrno(ERANGE, "getcwd");
  FLURRY_TRY(context.memory.Write(args.arg[0], cwd.c_str(), needed));
  return static_cast<int64_t>(needed);
}

void SetCwd(FdTable& fds, UniqueFd fd, std::string guest_path) {
  if (guest_path == "/") fd.Reset();  // the root: no fd of its own
  fds.SetCwd(std::move(fd), std::move(guest_path));
}

Value Chdir(SyscallContext& context, const SyscallArgs& args) {
  std::string path = FLURRY_TRY(PathArg(context.memory, args.arg[0]));
  FdTable& fds = context.state.fds;
  if (fds.root() == nullptr) {
    if (path == "/") return 0;
    return FailErrno(ENOENT, path);
  }
  PathRef ref = FLURRY_TRY(PathRefOf(context, AT_FDCWD, std::move(path)));
  UniqueFd dir =
      FLURRY_TRY(ref.dir->OpenAt(ref.base, ref.path, O_PATH | O_DIRECTORY | O_CLOEXEC, 0));
  std::string guest_path =
      ref.dir->GuestPathOf(dir.get(), HostDir::JoinGuestPath(ref.base.path, ref.path));
  SetCwd(fds, std::move(dir), std::move(guest_path));
  return 0;
}

Value Fchdir(SyscallContext& context, const SyscallArgs& args) {
  FdTable& fds = context.state.fds;
  OpenFile* file = FLURRY_TRY(fds.Get(IntArg(args.arg[0])));
  if (file->kind != FileKind::kDirectory) return FailErrno(ENOTDIR, "fchdir");
  UniqueFd dir(openat(file->host_fd(), ".", O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!dir.valid()) return HostError("fchdir");
  SetCwd(fds, std::move(dir), file->path);
  return 0;
}

}  // namespace

void RegisterPathSyscalls(SyscallTable& table) {
  table.Register(SYS_newfstatat, Handle<Newfstatat>);
  table.Register(SYS_stat, Handle<Stat>);
  table.Register(SYS_lstat, Handle<Lstat>);
  table.Register(SYS_statx, Handle<Statx>);
  table.Register(SYS_readlink, Handle<Readlink>);
  table.Register(SYS_readlinkat, Handle<Readlinkat>);
  table.Register(SYS_access, Handle<Access>);
  table.Register(SYS_faccessat, Handle<Faccessat>);
  table.Register(SYS_faccessat2, Handle<Faccessat2>);
  table.Register(SYS_unlink, Handle<Unlink>);
  table.Register(SYS_unlinkat, Handle<Unlinkat>);
  table.Register(SYS_rmdir, Handle<Rmdir>);
  table.Register(SYS_mkdir, Handle<Mkdir>);
  table.Register(SYS_mkdirat, Handle<Mkdirat>);
  table.Register(SYS_rename, Handle<Rename>);
  table.Register(SYS_renameat, Handle<Renameat>);
  table.Register(SYS_renameat2, Handle<Renameat2>);
  table.Register(SYS_getcwd, Handle<Getcwd>);
  table.Register(SYS_chdir, Handle<Chdir>);
  table.Register(SYS_fchdir, Handle<Fchdir>);
}

}  // namespace flurry::file_syscalls
