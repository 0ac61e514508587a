// Shared by the file syscall translation units (syscalls_file.cc: file descriptors and I/O;
// syscalls_path.cc: operations on paths; syscalls_pipe.cc, syscalls_event.cc,
// syscalls_epoll.cc: the kinds without a path): argument helpers and the handler adapter.
// Internal.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <optional>
#include <span>
#include <vector>

#include "guest/dev_files.h"
#include "guest/syscall.h"

namespace flurry::file_syscalls {

static_assert(sizeof(struct stat) == 144, "guest and host struct stat differ");
static_assert(sizeof(struct statx) == 256, "guest and host struct statx differ");

inline constexpr uint64_t kPathMax = 4096;
inline constexpr uint64_t kMaxRw = 0x7ffff000;     // Linux MAX_RW_COUNT: the most one call moves
inline constexpr uint64_t kMaxIov = 1024;          // UIO_MAXIOV
inline constexpr uint64_t kMaxDirents = 64 << 10;  // bytes of directory entries per getdents64
inline constexpr size_t kKernelTermiosSize = 36;   // struct termios as TCGETS fills it (NCCS 19)
inline constexpr int kSetflFlags =
    O_APPEND | O_NONBLOCK | O_DIRECT | O_NOATIME;  // what F_SETFL sets
inline constexpr int kStatxSyncType = 0x6000;      // AT_STATX_SYNC_TYPE

// A handler body: the value for RAX, or an error whose code is the errno.
using Value = Result<int64_t>;
using Body = Value (*)(SyscallContext&, const SyscallArgs&);

template <Body body>
SyscallResult Handle(SyscallContext& context, const SyscallArgs& args) {
  Value value = body(context, args);
  // A body that parked its thread (ParkOnFd: the VMM takes threads.block at every syscall
  // stop) has no value yet: it makes the syscall again when the wait ends.
  if (context.state.threads.block) return SyscallResult::Block();
  return value ? SyscallResult::Return(*value) : ErrnoFrom(value.error());
}

// Linux takes fds (and dirfds, flags, modes) as 32-bit ints.
inline int IntArg(uint64_t arg) { return static_cast<int>(static_cast<uint32_t>(arg)); }

inline std::unexpected<Error> HostError(std::string_view what) { return FailErrno(errno, what); }

// Whether the guest waits on `file` when its host fd is not ready: a pipe, eventfd, timerfd
// or epoll instance (whose host fds are always non-blocking) or the borrowed stdio, opened by
// the guest without O_NONBLOCK.
inline bool GuestWaitsOn(const OpenFile& file) {
  return (HostFdNonblocking(file.kind) || file.kind == FileKind::kStdio) &&
         (file.flags & O_NONBLOCK) == 0;
}

// An eventfd's, timerfd's or epoll instance's OpenFile: read-write, the guest's O_NONBLOCK
// kept in flags, its host fd non-blocking whatever the guest asked (HostFdNonblocking).
inline OpenFile EventFile(FileKind kind, UniqueFd host, int guest_flags) {
  OpenFile file;
  file.kind = kind;
  file.host = std::move(host);
  file.flags = O_RDWR | (guest_flags & O_NONBLOCK);
  return file;
}

// Parks the calling thread until the host fd of `file` is ready for `events` (ThreadWait::kFd;
// other threads run meanwhile, a signal interrupts it); the syscall is then made again. The
// body returns this value and Handle turns it into SyscallResult::Block().
inline Value ParkOnFd(SyscallContext& context, const OpenFile& file, short events) {
  ThreadBlock block{.wait = ThreadWait::kFd};
  block.poll_fds.push_back(pollfd{.fd = file.host_fd(), .events = events, .revents = 0});
  context.state.threads.block = std::move(block);
  return 0;
}

// Blocking semantics for writes to the borrowed host stdio: if the host fd is non-blocking
// (set by whoever shares the terminal) but the guest did not ask for O_NONBLOCK, wait until
// ready. (Reads park instead: ReadInto.)
inline bool WaitIfStdio(const SyscallContext& context, const OpenFile& file, short events) {
  if (errno != EAGAIN || file.kind != FileKind::kStdio || (file.flags & O_NONBLOCK) != 0) {
    return false;
  }
  pollfd pfd{file.host_fd(), events, 0};
  while (poll(&pfd, 1, -1) < 0 && errno == EINTR) {
    if (!context.KeepWaiting()) {
      errno = EINTR;
      return false;
    }
  }
  return true;
}

// ---- Guest argument helpers --------------------------------------------------------------

inline Result<std::string> PathArg(const GuestMemory& memory, uint64_t addr) {
  return memory.ReadCString(addr, kPathMax);
}

// The starting directory of a path in a *at syscall: the root for absolute paths, the cwd for
// AT_FDCWD, else the guest's directory fd (EBADF, ENOTDIR).
inline Result<HostDir::Base> BaseOf(const FdTable& fds, int dirfd, std::string_view path) {
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

inline Result<PathRef> PathRefOf(SyscallContext& context, int dirfd, std::string path) {
  const HostDir* dir = context.state.fds.root();
  if (dir == nullptr) return FailErrno(ENOENT, path);
  if (path.empty()) return FailErrno(ENOENT, "empty path");
  HostDir::Base base = FLURRY_TRY(BaseOf(context.state.fds, dirfd, path));
  return PathRef{dir, base, std::move(path)};
}

inline Result<PathRef> PathAt(SyscallContext& context, int dirfd, uint64_t path_addr) {
  std::string path = FLURRY_TRY(PathArg(context.memory, path_addr));
  return PathRefOf(context, dirfd, std::move(path));
}

// The host fd an AT_EMPTY_PATH operation on dirfd applies to.
inline Result<int> EmptyPathFd(const FdTable& fds, int dirfd) {
  if (dirfd != AT_FDCWD) return FLURRY_TRY(fds.Get(dirfd))->host_fd();
  if (fds.root() == nullptr) return FailErrno(ENOENT, "no root directory");
  HostDir::Base cwd = fds.cwd();
  return cwd.fd >= 0 ? cwd.fd : fds.root()->root_fd();
}

// A guest iovec array as host iovecs: windows onto guest memory (GuestWindow). Load() before a
// host write of the guest's bytes, Store(n) after a host read of n bytes into them.
struct GuestIovecs {
  std::vector<iovec> iov;
  std::vector<GuestWindow> windows;

  Result<void> Load() const {
    for (const GuestWindow& w : windows) FLURRY_TRY(w.Load());
    return {};
  }
  Result<void> Store(uint64_t n) const {
    for (const GuestWindow& w : windows) {
      if (n == 0) break;
      const uint64_t part = std::min<uint64_t>(n, w.bytes().size());
      FLURRY_TRY(w.Store(part));
      n -= part;
    }
    return {};
  }
};

// A guest iovec array (EINVAL, EFAULT) whose buffers the syscall will `access`; lengths past
// MAX_RW_COUNT in total are cut, as Linux does.
inline Result<GuestIovecs> IovecsArg(const GuestMemory& memory, uint64_t addr, uint64_t count,
                                     GuestAccess access) {
  struct GuestIovec {
    uint64_t base;
    uint64_t len;
  };
  if (count > kMaxIov) return FailErrno(EINVAL, "iovec count");
  std::vector<GuestIovec> guest(count);
  FLURRY_TRY(memory.Read(addr, guest.data(), count * sizeof(GuestIovec)));
  GuestIovecs host;
  host.windows.reserve(count);
  uint64_t total = 0;
  for (const GuestIovec& v : guest) {
    if (static_cast<int64_t>(v.len) < 0) return FailErrno(EINVAL, "iovec length");
    uint64_t len = std::min(v.len, kMaxRw - total);
    if (len == 0) continue;
    host.windows.push_back(FLURRY_TRY(memory.Window(v.base, len, access)));
    host.iov.push_back({host.windows.back().bytes().data(), len});
    total += len;
  }
  return host;
}

// ---- /dev (syscalls_dev.cc, guest/dev_files.h) -----------------------------------------

// The /dev entry a path argument names (relative paths: from the cwd, with AT_FDCWD), if any.
std::optional<DevicePath> DeviceArg(const SyscallContext& context, int dirfd,
                                    std::string_view path);
// open(2) of it: a host device, or a new fd sharing the guest fd it stands for.
Value OpenDevice(SyscallContext& context, const DevicePath& device, int flags);
Result<struct stat> StatDevice(const SyscallContext& context, const DevicePath& device,
                               bool follow);
Result<struct statx> StatxDevice(const SyscallContext& context, const DevicePath& device,
                                 bool follow, uint32_t mask);
Result<void> AccessDevice(const SyscallContext& context, const DevicePath& device, int mode,
                          int flags);
Result<std::string> ReadlinkDevice(const DevicePath& device);

// Registers the path syscalls (syscalls_path.cc) and pipe, pipe2 (syscalls_pipe.cc);
// RegisterFileSyscalls calls them.
void RegisterPathSyscalls(SyscallTable& table);
void RegisterPipeSyscalls(SyscallTable& table);
// eventfd, eventfd2 and the timerfd calls (syscalls_event.cc); the epoll calls
// (syscalls_epoll.cc).
void RegisterEventSyscalls(SyscallTable& table);
void RegisterEpollSyscalls(SyscallTable& table);

}  // namespace flurry::file_syscalls
