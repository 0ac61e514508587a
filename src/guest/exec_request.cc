#include "guest/exec_request.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "guest/syscalls_file_support.h"

namespace flurry {

Result<std::vector<std::string>> ReadStringArray(const GuestMemory& memory, uint64_t array,
                                                 uint64_t* total) {
  std::vector<std::string> strings;
  if (array == 0) return strings;  // Linux takes a NULL argv or envp as empty
  for (uint64_t at = array;; at += sizeof(uint64_t)) {
    const uint64_t pointer = FLURRY_TRY(memory.ReadObject<uint64_t>(at));
    if (pointer == 0) return strings;
    *total += sizeof(uint64_t);
    Result<std::string> read = memory.ReadCString(pointer, kMaxArgString);
    if (!read) {  // one argument longer than Linux takes is E2BIG, as the total is
      if (read.error().code() == ENAMETOOLONG) return FailErrno(E2BIG, "execve argument");
      return std::unexpected(read.error());
    }
    std::string s = std::move(*read);
    *total += s.size() + 1;
    if (*total > kMaxArgTotal) return FailErrno(E2BIG, "execve arguments");
    strings.push_back(std::move(s));
  }
}

namespace {

// The absolute guest path of `path` opened from `base` (for /proc/self/exe).
std::string AbsolutePath(const HostDir::Base& base, const std::string& path) {
  if (!path.empty() && path[0] == '/') return path;
  const std::string dir = base.path.empty() ? std::string("/") : std::string(base.path);
  return dir == "/" ? "/" + path : dir + "/" + path;
}

}  // namespace

Result<ExecRequest> ReadExecRequest(SyscallContext& context, const SyscallArgs& args,
                                    int self_exe) {
  const bool at = args.nr == SYS_execveat;
  const int dirfd = at ? file_syscalls::IntArg(args.arg[0]) : AT_FDCWD;
  const std::span<const uint64_t> a(args.arg.data() + (at ? 1 : 0), 3);
  const int flags = at ? file_syscalls::IntArg(args.arg[4]) : 0;
  if ((flags & ~(AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW)) != 0) {
    return FailErrno(EINVAL, "execveat flags");
  }
  ExecRequest request;
  request.path = FLURRY_TRY(context.memory.ReadCString(a[0], file_syscalls::kPathMax));
  uint64_t total = 0;
  request.argv = FLURRY_TRY(ReadStringArray(context.memory, a[1], &total));
  request.envp = FLURRY_TRY(ReadStringArray(context.memory, a[2], &total));
  if (request.path == "/proc/self/exe") {
    if (self_exe < 0) return FailErrno(ENOENT, "/proc/self/exe");
    request.file.Reset(fcntl(self_exe, F_DUPFD_CLOEXEC, 0));
    if (!request.file.valid()) return FailErrno(errno, "/proc/self/exe");
    request.exe_path = context.state.identity.exe_path;
    return request;
  }
  if (request.path.empty() && (flags & AT_EMPTY_PATH)) {  // fexecve
    const OpenFile* file = FLURRY_TRY(context.state.fds.Get(dirfd));
    request.file.Reset(
        static_cast<int>(syscall(SYS_openat, file->host_fd(), "", O_RDONLY | O_CLOEXEC)));
    // An O_PATH or a directory fd cannot be reopened so: open it by its path instead.
    if (!request.file.valid()) {
      const HostDir* root = context.state.fds.root();
      if (root == nullptr) return FailErrno(ENOENT, "fexecve");
      request.file = FLURRY_TRY(root->OpenAt(file->path, O_RDONLY, 0));
    }
    request.exe_path = file->path;
    return request;
  }
  const file_syscalls::PathRef ref =
      FLURRY_TRY(file_syscalls::PathRefOf(context, dirfd, request.path));
  // Execute permission as the guest's (root's) access(2) sees it: some x bit must be set.
  FLURRY_TRY(ref.dir->Access(ref.base, ref.path, X_OK, flags & AT_SYMLINK_NOFOLLOW));
  request.file = FLURRY_TRY(
      ref.dir->OpenAt(ref.base, ref.path,
                      O_RDONLY | O_NONBLOCK | ((flags & AT_SYMLINK_NOFOLLOW) ? O_NOFOLLOW : 0), 0));
  struct stat st {};
  if (fstat(request.file.get(), &st) != 0) return FailErrno(errno, "execve");
  if (!S_ISREG(st.st_mode)) return FailErrno(EACCES, "execve: not a regular file");
  request.exe_path = AbsolutePath(ref.base, ref.path);
  return request;
}

}  // namespace flurry
