// The file syscalls: read/write and friends on the guest's FdTable, and the path syscalls on
// its HostDir. Handlers run on the vCPU thread (see syscall.h).
//
// Guest buffers are used in place: a read(2) goes straight from the host fd into guest RAM
// through a span GuestMemory has checked (EFAULT when any byte of [buf, buf+count) lies outside
// user memory). Guest paths are read with a 4096-byte limit (ENAMETOOLONG). x86-64 Linux guest
// and host share every structure layout copied here (stat, statx, iovec, termios, winsize).
#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <span>
#include <vector>

#include "guest/syscall.h"

namespace flurry {
namespace {

static_assert(sizeof(struct stat) == 144, "guest and host struct stat differ");
static_assert(sizeof(struct statx) == 256, "guest and host struct statx differ");

constexpr uint64_t kPathMax = 4096;
constexpr uint64_t kMaxRw = 0x7ffff000;     // Linux MAX_RW_COUNT: the most one call moves
constexpr uint64_t kMaxIov = 1024;          // UIO_MAXIOV
constexpr uint64_t kMaxDirents = 64 << 10;  // bytes of directory entries per getdents64
constexpr size_t kKernelTermiosSize = 36;   // struct termios as TCGETS fills it (NCCS 19)
constexpr int kSetflFlags = O_APPEND | O_NONBLOCK | O_DIRECT | O_NOATIME;  // what F_SETFL sets
constexpr int kStatxSyncType = 0x6000;                                     // AT_STATX_SYNC_TYPE

// A handler body: the value for RAX, or an error whose code is the errno.
using Value = Result<int64_t>;
using Body = Value (*)(SyscallContext&, const SyscallArgs&);

template <Body body>
SyscallResult Handle(SyscallContext& context, const SyscallArgs& args) {
  Value value = body(context, args);
  return value ? SyscallResult::Return(*value) : ErrnoFrom(value.error());
}

// Linux takes fds (and dirfds, flags, modes) as 32-bit ints.
int IntArg(uint64_t arg) { return static_cast<int>(static_cast<uint32_t>(arg)); }

std::unexpected<Error> HostError(std::string_view what) { return FailErrno(errno, what); }

// Blocking semantics for the borrowed host stdio: if the host fd is non-blocking (set by
// whoever shares the terminal) but the guest did not ask for O_NONBLOCK, wait until ready.
bool WaitIfStdio(const OpenFile& file, short events) {
  if (errno != EAGAIN || file.kind != FileKind::kStdio || (file.flags & O_NONBLOCK) != 0) {
    return false;
  }
  pollfd pfd{file.host_fd(), events, 0};
  while (poll(&pfd, 1, -1) < 0 && errno == EINTR) {
  }
  return true;
}

// ---- Guest argument helpers --------------------------------------------------------------

Result<std::string> PathArg(const GuestMemory& memory, uint64_t addr) {
  return memory.ReadCString(addr, kPathMax);
}

// The starting directory of a path in a *at syscall: the root for absolute paths, the cwd for
// AT_FDCWD, else the guest's directory fd (EBADF, ENOTDIR).
Result<HostDir::Base> BaseOf(const FdTable& fds, int dirfd, std::string_view path) {
  if (!path.empty() && path[0] == '/') return HostDir::Base{};
  if (dirfd == AT_FDCWD) return fds.cwd();
  OpenFile* file = FLURRY_TRY(fds.Get(dirfd));
  if (file->kind != FileKind::kDirectory) return FailErrno(ENOTDIR, "dirfd");
  return HostDir::Base{file->host_fd(), file->path};
}

// A guest path argument ready for HostDir: ENOENT without a root or for "".
struct PathRef {
  const HostDir* dir;
  HostDir::Base base;
  std::string path;
};

Result<PathRef> PathRefOf(SyscallContext& context, int dirfd, std::string path) {
  const HostDir* dir = context.state.fds.root();
  if (dir == nullptr) return FailErrno(ENOENT, path);
  if (path.empty()) return FailErrno(ENOENT, "empty path");
  HostDir::Base base = FLURRY_TRY(BaseOf(context.state.fds, dirfd, path));
  return PathRef{dir, base, std::move(path)};
}

Result<PathRef> PathAt(SyscallContext& context, int dirfd, uint64_t path_addr) {
  std::string path = FLURRY_TRY(PathArg(context.memory, path_addr));
  return PathRefOf(context, dirfd, std::move(path));
}

// The host fd an AT_EMPTY_PATH operation on dirfd applies to.
Result<int> EmptyPathFd(const FdTable& fds, int dirfd) {
  if (dirfd != AT_FDCWD) return FLURRY_TRY(fds.Get(dirfd))->host_fd();
  if (fds.root() == nullptr) return FailErrno(ENOENT, "no root directory");
  HostDir::Base cwd = fds.cwd();
  return cwd.fd >= 0 ? cwd.fd : fds.root()->root_fd();
}

// A guest iovec array as host iovecs into guest memory (EINVAL, EFAULT); lengths past
// MAX_RW_COUNT in total are cut, as Linux does.
Result<std::vector<iovec>> IovecsArg(const GuestMemory& memory, uint64_t addr, uint64_t count) {
  struct GuestIovec {
    uint64_t base;
    uint64_t len;
  };
  if (count > kMaxIov) return FailErrno(EINVAL, "iovec count");
  std::vector<GuestIovec> guest(count);
  FLURRY_TRY(memory.Read(addr, guest.data(), count * sizeof(GuestIovec)));
  std::vector<iovec> host;
  host.reserve(count);
  uint64_t total = 0;
  for (const GuestIovec& v : guest) {
    if (static_cast<int64_t>(v.len) < 0) return FailErrno(EINVAL, "iovec length");
    uint64_t len = std::min(v.len, kMaxRw - total);
    if (len == 0) continue;
    std::span<uint8_t> span = FLURRY_TRY(memory.UserSpan(v.base, len));
    host.push_back({span.data(), len});
    total += len;
  }
  return host;
}

// ---- Reading and writing -----------------------------------------------------------------

// One readv/preadv (offset < 0: at the file offset); a short read is the guest's to handle.
Value ReadInto(const SyscallContext& context, const OpenFile& file, std::span<iovec> iov,
               int64_t offset) {
  for (;;) {
    ssize_t n = offset < 0
                    ? readv(file.host_fd(), iov.data(), static_cast<int>(iov.size()))
                    : preadv(file.host_fd(), iov.data(), static_cast<int>(iov.size()), offset);
    if (n >= 0) return n;
    if ((errno == EINTR && !context.Stopping()) || WaitIfStdio(file, POLLIN)) continue;
    return HostError("read");
  }
}

// Writes all of iov, looping on partial writes (a terminal or pipe may take part of one).
// Returns the bytes written; an error only when nothing was.
Value WriteFrom(const SyscallContext& context, const OpenFile& file, std::span<iovec> iov,
                int64_t offset) {
  if (file.line_writer != nullptr && offset < 0) return file.line_writer->Write(iov);
  int64_t total = 0;
  size_t first = 0;
  for (;;) {
    std::span<iovec> rest = iov.subspan(first);
    ssize_t n = offset < 0 ? writev(file.host_fd(), rest.data(), static_cast<int>(rest.size()))
                           : pwritev(file.host_fd(), rest.data(), static_cast<int>(rest.size()),
                                     offset + total);
    if (n < 0) {
      if ((errno == EINTR && !context.Stopping()) || WaitIfStdio(file, POLLOUT)) continue;
      if (total > 0) return total;
      return HostError("write");
    }
    total += n;
    auto done = static_cast<size_t>(n);
    while (first < iov.size() && done >= iov[first].iov_len) done -= iov[first++].iov_len;
    if (first == iov.size() || n == 0) return total;
    iov[first].iov_base = static_cast<uint8_t*>(iov[first].iov_base) + done;
    iov[first].iov_len -= done;
  }
}

// read/write/pread64/pwrite64: one guest buffer as a single iovec.
Value BufferIo(SyscallContext& context, const SyscallArgs& args, bool write, int64_t offset) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  uint64_t count = std::min(args.arg[2], kMaxRw);
  char empty = 0;
  iovec iov{&empty, 0};
  if (count != 0) {
    std::span<uint8_t> span = FLURRY_TRY(context.memory.UserSpan(args.arg[1], count));
    iov = {span.data(), count};
  }
  return write ? WriteFrom(context, *file, {&iov, 1}, offset)
               : ReadInto(context, *file, {&iov, 1}, offset);
}

Value Read(SyscallContext& context, const SyscallArgs& args) {
  return BufferIo(context, args, /*write=*/false, -1);
}

Value Write(SyscallContext& context, const SyscallArgs& args) {
  return BufferIo(context, args, /*write=*/true, -1);
}

Value Pread64(SyscallContext& context, const SyscallArgs& args) {
  auto offset = static_cast<int64_t>(args.arg[3]);
  if (offset < 0) return FailErrno(EINVAL, "pread offset");
  return BufferIo(context, args, /*write=*/false, offset);
}

Value Pwrite64(SyscallContext& context, const SyscallArgs& args) {
  auto offset = static_cast<int64_t>(args.arg[3]);
  if (offset < 0) return FailErrno(EINVAL, "pwrite offset");
  return BufferIo(context, args, /*write=*/true, offset);
}

Value Readv(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  std::vector<iovec> iov = FLURRY_TRY(IovecsArg(context.memory, args.arg[1], args.arg[2]));
  return ReadInto(context, *file, iov, -1);
}

Value Writev(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  std::vector<iovec> iov = FLURRY_TRY(IovecsArg(context.memory, args.arg[1], args.arg[2]));
  return WriteFrom(context, *file, iov, -1);
}

Value Lseek(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  off_t result =
      lseek(file->host_fd(), static_cast<off_t>(args.arg[1]), static_cast<int>(args.arg[2]));
  if (result < 0) return HostError("lseek");
  return result;
}

Value Getdents64(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  if (file->kind != FileKind::kDirectory) return FailErrno(ENOTDIR, "getdents64");
  uint64_t count = static_cast<uint32_t>(args.arg[2]);
  std::span<uint8_t> span = FLURRY_TRY(context.memory.UserSpan(args.arg[1], count));
  long n = syscall(SYS_getdents64, file->host_fd(), span.data(), std::min(count, kMaxDirents));
  if (n < 0) return HostError("getdents64");
  return n;
}

// ---- Opening and closing -----------------------------------------------------------------

Value OpenAt(SyscallContext& context, int dirfd, uint64_t path_addr, int flags, mode_t mode) {
  PathRef ref = FLURRY_TRY(PathAt(context, dirfd, path_addr));
  FdTable& fds = context.state.fds;
  // Like Linux, take the fd slot before touching the file system (no file created on EMFILE).
  if (fds.OpenCount() >= FdTable::kMaxFds) return FailErrno(EMFILE, "guest fd table full");
  UniqueFd fd = FLURRY_TRY(ref.dir->OpenAt(ref.base, ref.path, flags, mode));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return HostError("fstat");
  OpenFile file;
  file.kind = S_ISREG(st.st_mode)   ? FileKind::kRegular
              : S_ISDIR(st.st_mode) ? FileKind::kDirectory
                                    : FileKind::kOther;
  file.path = ref.dir->GuestPathOf(fd.get(), HostDir::JoinGuestPath(ref.base.path, ref.path));
  // What F_GETFL reports: the open flags without the open-time-only ones.
  file.flags =
      (flags & HostDir::kGuestOpenFlags & ~(O_CLOEXEC | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC)) |
      HostDir::kKernelLargefile;
  file.host = std::move(fd);
  return FLURRY_TRY(fds.Install(std::move(file), (flags & O_CLOEXEC) != 0));
}

Value Openat(SyscallContext& context, const SyscallArgs& args) {
  return OpenAt(context, IntArg(args.arg[0]), args.arg[1], IntArg(args.arg[2]),
                static_cast<mode_t>(args.arg[3]));
}

Value Open(SyscallContext& context, const SyscallArgs& args) {
  return OpenAt(context, AT_FDCWD, args.arg[0], IntArg(args.arg[1]),
                static_cast<mode_t>(args.arg[2]));
}

Value Close(SyscallContext& context, const SyscallArgs& args) {
  FLURRY_TRY(context.state.fds.Close(IntArg(args.arg[0])));
  return 0;
}

Value CloseRange(SyscallContext& context, const SyscallArgs& args) {
  auto first = static_cast<uint32_t>(args.arg[0]);
  auto last = static_cast<uint32_t>(args.arg[1]);
  auto flags = static_cast<uint32_t>(args.arg[2]);
  if ((flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC)) != 0 || first > last) {
    return FailErrno(EINVAL, "close_range");
  }
  context.state.fds.CloseRange(first, last, (flags & CLOSE_RANGE_CLOEXEC) != 0);
  return 0;
}

Value Dup(SyscallContext& context, const SyscallArgs& args) {
  return FLURRY_TRY(context.state.fds.Dup(IntArg(args.arg[0]), 0, false));
}

Value Dup2(SyscallContext& context, const SyscallArgs& args) {
  return FLURRY_TRY(context.state.fds.DupTo(IntArg(args.arg[0]), IntArg(args.arg[1]), false));
}

Value Dup3(SyscallContext& context, const SyscallArgs& args) {
  int flags = IntArg(args.arg[2]);
  if ((flags & ~O_CLOEXEC) != 0 || IntArg(args.arg[0]) == IntArg(args.arg[1])) {
    return FailErrno(EINVAL, "dup3");
  }
  return FLURRY_TRY(
      context.state.fds.DupTo(IntArg(args.arg[0]), IntArg(args.arg[1]), (flags & O_CLOEXEC) != 0));
}

Value Fcntl(SyscallContext& context, const SyscallArgs& args) {
  FdTable& fds = context.state.fds;
  int fd = IntArg(args.arg[0]);
  int arg = IntArg(args.arg[2]);
  OpenFile* file = FLURRY_TRY(fds.Get(fd));
  switch (IntArg(args.arg[1])) {
    case F_DUPFD:
    case F_DUPFD_CLOEXEC:
      if (arg < 0 || arg >= FdTable::kMaxFds) return FailErrno(EINVAL, "F_DUPFD");
      return FLURRY_TRY(fds.Dup(fd, arg, IntArg(args.arg[1]) == F_DUPFD_CLOEXEC));
    case F_GETFD:
      return FLURRY_TRY(fds.GetCloexec(fd)) ? FD_CLOEXEC : 0;
    case F_SETFD:
      FLURRY_TRY(fds.SetCloexec(fd, (arg & FD_CLOEXEC) != 0));
      return 0;
    case F_GETFL: {
      int flags = file->flags;
      if (file->kind == FileKind::kStdio) {  // the access mode the host stdio really has
        int host = fcntl(file->host_fd(), F_GETFL);
        if (host >= 0) flags = (flags & ~O_ACCMODE) | (host & O_ACCMODE);
      }
      return flags;
    }
    case F_SETFL: {
      // Borrowed stdio keeps its host flags (they are shared with the host's terminal).
      if (file->kind != FileKind::kStdio) {
        int host = fcntl(file->host_fd(), F_GETFL);
        if (host < 0) return HostError("F_GETFL");
        if (fcntl(file->host_fd(), F_SETFL, (host & ~kSetflFlags) | (arg & kSetflFlags)) != 0) {
          return HostError("F_SETFL");
        }
      }
      file->flags = (file->flags & ~kSetflFlags) | (arg & kSetflFlags);
      return 0;
    }
    default:
      return FailErrno(EINVAL, "fcntl command");
  }
}

Value Ioctl(SyscallContext& context, const SyscallArgs& args) {
  int fd = IntArg(args.arg[0]);
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(fd));
  auto request = static_cast<uint32_t>(args.arg[1]);
  switch (request) {
    case FIOCLEX:
    case FIONCLEX:
      FLURRY_TRY(context.state.fds.SetCloexec(fd, request == FIOCLEX));
      return 0;
    case TCGETS:
    case TIOCGWINSZ: {
      // Only the borrowed host stdio can be a terminal.
      if (file->kind != FileKind::kStdio) return FailErrno(ENOTTY, "ioctl");
      alignas(8) uint8_t answer[64] = {};
      if (ioctl(file->host_fd(), request, answer) != 0) return HostError("ioctl");
      size_t size = request == TCGETS ? kKernelTermiosSize : sizeof(winsize);
      FLURRY_TRY(context.memory.Write(args.arg[2], answer, size));
      return 0;
    }
    default:
      return FailErrno(ENOTTY, "ioctl");
  }
}

// ---- Metadata ----------------------------------------------------------------------------

Value Fstat(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  struct stat st {};
  if (fstat(file->host_fd(), &st) != 0) return HostError("fstat");
  FLURRY_TRY(context.memory.WriteObject(args.arg[1], st));
  return 0;
}

// The path of a stat-like call; "" when the guest passed NULL with AT_EMPTY_PATH (Linux 6.11).
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

Value Ftruncate(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  auto length = static_cast<off_t>(args.arg[1]);
  if (length < 0) return FailErrno(EINVAL, "ftruncate length");
  if (ftruncate(file->host_fd(), length) != 0) return HostError("ftruncate");
  return 0;
}

Value Fsync(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  int rc = args.nr == SYS_fdatasync ? fdatasync(file->host_fd()) : fsync(file->host_fd());
  if (rc != 0) return HostError("fsync");
  return 0;
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

void RegisterFileSyscalls(SyscallTable& table) {
  table.Register(SYS_read, Handle<Read>);
  table.Register(SYS_write, Handle<Write>);
  table.Register(SYS_readv, Handle<Readv>);
  table.Register(SYS_writev, Handle<Writev>);
  table.Register(SYS_pread64, Handle<Pread64>);
  table.Register(SYS_pwrite64, Handle<Pwrite64>);
  table.Register(SYS_lseek, Handle<Lseek>);
  table.Register(SYS_getdents64, Handle<Getdents64>);
  table.Register(SYS_open, Handle<Open>);
  table.Register(SYS_openat, Handle<Openat>);
  table.Register(SYS_close, Handle<Close>);
  table.Register(SYS_close_range, Handle<CloseRange>);
  table.Register(SYS_dup, Handle<Dup>);
  table.Register(SYS_dup2, Handle<Dup2>);
  table.Register(SYS_dup3, Handle<Dup3>);
  table.Register(SYS_fcntl, Handle<Fcntl>);
  table.Register(SYS_ioctl, Handle<Ioctl>);
  table.Register(SYS_fstat, Handle<Fstat>);
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
  table.Register(SYS_ftruncate, Handle<Ftruncate>);
  table.Register(SYS_fsync, Handle<Fsync>);
  table.Register(SYS_fdatasync, Handle<Fsync>);
  table.Register(SYS_getcwd, Handle<Getcwd>);
  table.Register(SYS_chdir, Handle<Chdir>);
  table.Register(SYS_fchdir, Handle<Fchdir>);
}

}  // namespace flurry
