#include "guest/host_dir.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "guest/lazy_files.h"

namespace flurry {
namespace {

// The flags openat2(2) accepts together with O_PATH.
constexpr int kPathFlags = O_PATH | O_DIRECTORY | O_NOFOLLOW;

constexpr uint64_t kResolveFromRoot = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;
constexpr uint64_t kResolveFromDir = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;

Result<UniqueFd> OpenAt2(int dirfd, const std::string& path, uint64_t flags, uint64_t mode,
                         uint64_t resolve) {
  open_how how{};
  how.flags = flags;
  how.mode = mode;
  how.resolve = resolve;
  // EAGAIN: a concurrent rename raced with ".." resolution under RESOLVE_IN_ROOT/BENEATH.
  for (int attempt = 0;; ++attempt) {
    long fd = syscall(SYS_openat2, dirfd, path.c_str(), &how, sizeof(how));
    if (fd >= 0) return UniqueFd(static_cast<int>(fd));
    if (errno == EINTR || (errno == EAGAIN && attempt < 32)) continue;
    return FailErrno(errno, fmt::format("opening {}", path));
  }
}

std::string_view StripTrailingSlashes(std::string_view name) {
  while (name.size() > 1 && name.back() == '/') name.remove_suffix(1);
  return name;
}

std::string ReadProcFdLink(int fd) {
  char link[64];
  std::snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
  char target[4096];
  ssize_t n = readlink(link, target, sizeof(target));
  if (n <= 0 || static_cast<size_t>(n) >= sizeof(target)) return {};
  return std::string(target, static_cast<size_t>(n));
}

}  // namespace

Result<HostDir> HostDir::Open(const std::string& path, bool writable) {
  std::string what = fmt::format("--dir {}", path);
  if (path.empty()) return FailErrno(ENOENT, what);
  UniqueFd root(open(path.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return FailErrno(what);
  // Confinement depends on openat2(2); refuse to run without it.
  {
    Result<UniqueFd> probe = OpenAt2(root.get(), ".", O_PATH | O_CLOEXEC, 0, kResolveFromRoot);
    if (!probe) {
      if (probe.error().code() == ENOSYS) {
        return Fail("{}: openat2(2) is not supported by this kernel (Linux 5.6 or newer needed)",
                    what);
      }
      return std::unexpected(std::move(probe.error()).WithContext(what));
    }
  }
  std::string canonical = ReadProcFdLink(root.get());
  if (canonical.empty() || canonical[0] != '/') canonical.clear();
  // The path travels in descriptors (snapshots, clones), which hold absolute paths only: a
  // relative one is taken from the current directory now.
  std::error_code error;
  std::string absolute = std::filesystem::absolute(path, error).lexically_normal().string();
  if (error || absolute.empty()) absolute = canonical;
  if (absolute.size() > 1 && absolute.ends_with('/')) absolute.pop_back();
  return HostDir(std::move(root), writable, std::move(absolute), std::move(canonical));
}

std::string HostDir::JoinGuestPath(std::string_view dir, std::string_view relative) {
  if (!relative.empty() && relative[0] == '/') return std::string(relative);
  std::string joined(dir.empty() ? "/" : dir);
  if (joined.back() != '/') joined += '/';
  joined += relative;
  return joined;
}

std::string HostDir::GuestPathOf(int host_fd, std::string_view fallback) const {
  std::string target = ReadProcFdLink(host_fd);
  if (canonical_.empty() || target.empty() || target[0] != '/') return std::string(fallback);
  if (canonical_ == "/") return target;
  if (target == canonical_) return "/";
  if (target.size() > canonical_.size() && target.compare(0, canonical_.size(), canonical_) == 0 &&
      target[canonical_.size()] == '/') {
    return target.substr(canonical_.size());
  }
  return std::string(fallback);
}

Result<UniqueFd> HostDir::Resolve(const Base& base, std::string_view path, uint64_t flags,
                                  uint64_t mode) const {
  if (path.empty()) return FailErrno(ENOENT, "opening an empty path");
  if (path[0] == '/' || base.fd < 0) {
    return OpenAt2(root_.get(), std::string(path), flags, mode, kResolveFromRoot);
  }
  Result<UniqueFd> beneath = OpenAt2(base.fd, std::string(path), flags, mode, kResolveFromDir);
  if (beneath || beneath.error().code() != EXDEV) return beneath;
  // The path climbs out of the base directory: resolve it from the root instead.
  return OpenAt2(root_.get(), JoinGuestPath(base.path, path), flags, mode, kResolveFromRoot);
}

Result<UniqueFd> HostDir::OpenAt(std::string_view guest_path, int flags, mode_t mode) const {
  return OpenAt(Base{}, guest_path, flags, mode);
}

Result<UniqueFd> HostDir::OpenAt(const Base& base, std::string_view guest_path, int flags,
                                 mode_t mode) const {
  UniqueFd fd = FLURRY_TRY(OpenUnfilled(base, guest_path, flags, mode));
  if (lazy_ && (flags & O_PATH) == 0) {
    if (auto filled = lazy_->Ensure(fd.get(), flags); !filled) {
      // The guest sees an I/O error, as on a network file system; the reason goes to stderr.
      const std::string line =
          fmt::format("flurry: opening {}: {}\n", guest_path, filled.error().message());
      (void)!write(2, line.data(), line.size());
      return FailErrno(EIO, fmt::format("opening {}", guest_path));
    }
  }
  return fd;
}

Result<void> HostDir::FetchPendingFiles() const {
  if (!lazy_ || !lazy_->has_pending()) return {};
  return lazy_->FetchAll(root_.get());
}

Result<UniqueFd> HostDir::OpenUnfilled(const Base& base, std::string_view guest_path, int flags,
                                       mode_t mode) const {
  flags &= kGuestOpenFlags;
  if (flags & O_PATH) {
    return Resolve(base, guest_path, (flags & kPathFlags) | O_CLOEXEC, 0);
  }
  bool tmpfile = (flags & O_TMPFILE) == O_TMPFILE;
  bool creates = tmpfile || (flags & O_CREAT) != 0;
  bool writes = (flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0 || creates;
  mode &= 07777;
  if (!writable_ && writes) return OpenReadOnly(base, guest_path, flags);
  if (creates && !tmpfile) return OpenCreate(base, guest_path, flags, mode);
  UniqueFd fd = FLURRY_TRY(Resolve(base, guest_path, flags | O_CLOEXEC, creates ? mode : 0));
  if (tmpfile) (void)fchmod(fd.get(), mode & 0777);
  return fd;
}

// Read-only root and an open that may write: errors in the order Linux reports them on a
// read-only mount (lookup errors, EEXIST for O_CREAT|O_EXCL, EISDIR, then EROFS).
Result<UniqueFd> HostDir::OpenReadOnly(const Base& base, std::string_view path, int flags) const {
  bool tmpfile = (flags & O_TMPFILE) == O_TMPFILE;
  bool create = (flags & O_CREAT) != 0;
  bool exclusive = create && (flags & O_EXCL) != 0;
  int probe_flags = O_PATH | O_CLOEXEC | (tmpfile ? O_DIRECTORY : flags & kPathFlags);
  if (exclusive) probe_flags |= O_NOFOLLOW;
  Result<UniqueFd> probe = Resolve(base, path, probe_flags, 0);
  if (!probe) {
    if (!create || probe.error().code() != ENOENT) return probe;
    FLURRY_TRY(ResolveParent(base, path));  // a missing parent directory is ENOENT
    return FailErrno(EROFS, "creating a file");
  }
  if (tmpfile) return FailErrno(EROFS, "creating a temporary file");
  if (exclusive) return FailErrno(EEXIST, "creating a file");
  struct stat st {};
  if (fstat(probe->get(), &st) == 0 && S_ISDIR(st.st_mode)) {
    return FailErrno(EISDIR, "opening a directory for writing");
  }
  if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC) != 0) {
    return FailErrno(EROFS, "opening a file for writing");
  }
  // O_CREAT of an existing file, read only: an ordinary open.
  return Resolve(base, path, (flags & ~(O_CREAT | O_EXCL)) | O_CLOEXEC, 0);
}

// Writable root and O_CREAT: learn whether this open creates the file (O_EXCL first), so that
// only a new file gets its mode set, whatever the host umask.
Result<UniqueFd> HostDir::OpenCreate(const Base& base, std::string_view path, int flags,
                                     mode_t mode) const {
  int host_flags = flags | O_CLOEXEC;
  Result<UniqueFd> created = Resolve(base, path, host_flags | O_EXCL, mode);
  if (created) {
    (void)fchmod(created->get(), mode & 0777);
    return created;
  }
  if ((flags & O_EXCL) != 0 || created.error().code() != EEXIST) return created;
  Result<UniqueFd> existing = Resolve(base, path, host_flags & ~O_CREAT, 0);
  if (existing || existing.error().code() != ENOENT) return existing;
  // A symlink to a missing file: create through it as Linux does (the host umask applies).
  return Resolve(base, path, host_flags, mode);
}

Result<UniqueFd> HostDir::Lookup(const Base& base, std::string_view guest_path, bool follow) const {
  return Resolve(base, guest_path, O_PATH | O_CLOEXEC | (follow ? 0 : O_NOFOLLOW), 0);
}

Result<struct stat> HostDir::Stat(const Base& base, std::string_view guest_path,
                                  bool follow) const {
  UniqueFd fd = FLURRY_TRY(Lookup(base, guest_path, follow));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return FailErrno("fstat");
  return st;
}

Result<std::string> HostDir::Readlink(const Base& base, std::string_view guest_path) const {
  UniqueFd fd = FLURRY_TRY(Lookup(base, guest_path, /*follow=*/false));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return FailErrno("fstat");
  if (!S_ISLNK(st.st_mode)) return FailErrno(EINVAL, "readlink of a non-symlink");
  char target[4096];
  ssize_t n = readlinkat(fd.get(), "", target, sizeof(target));
  if (n < 0) return FailErrno("readlink");
  return std::string(target, static_cast<size_t>(n));
}

Result<void> HostDir::Access(const Base& base, std::string_view guest_path, int mode,
                             int flags) const {
  if ((mode & ~(R_OK | W_OK | X_OK)) != 0) return FailErrno(EINVAL, "access mode");
  UniqueFd fd = FLURRY_TRY(Lookup(base, guest_path, (flags & AT_SYMLINK_NOFOLLOW) == 0));
  if (!writable_ && (mode & W_OK) != 0) return FailErrno(EROFS, "access(W_OK)");
  if (syscall(SYS_faccessat2, fd.get(), "", mode, AT_EMPTY_PATH | (flags & AT_EACCESS)) != 0) {
    return FailErrno("access");
  }
  return {};
}

Result<HostDir::Parent> HostDir::ResolveParent(const Base& base, std::string_view path) const {
  if (path.empty()) return FailErrno(ENOENT, "an empty path");
  size_t end = path.size();
  while (end > 0 && path[end - 1] == '/') --end;
  Parent parent;
  if (end == 0) {  // "/" itself: the root's "."
    parent.fd = root_.get();
    parent.name.assign(1, '.');
    return parent;
  }
  size_t slash = path.rfind('/', end - 1);
  size_t start = slash == std::string_view::npos ? 0 : slash + 1;
  parent.name = std::string(path.substr(start, end - start));
  if (end < path.size()) parent.name += '/';  // "dir/": only directories match
  if (start == 0) {
    parent.fd = base.fd >= 0 ? base.fd : root_.get();
    return parent;
  }
  parent.holder =
      FLURRY_TRY(Resolve(base, path.substr(0, start), O_PATH | O_DIRECTORY | O_CLOEXEC, 0));
  parent.fd = parent.holder.get();
  return parent;
}

Result<void> HostDir::Unlink(const Base& base, std::string_view guest_path, bool remove_dir) const {
  Parent parent = FLURRY_TRY(ResolveParent(base, guest_path));
  std::string_view name = StripTrailingSlashes(parent.name);
  if (name == ".") return FailErrno(remove_dir ? EINVAL : EISDIR, "removing .");
  if (name == "..") return FailErrno(remove_dir ? ENOTEMPTY : EISDIR, "removing ..");
  if (!writable_) return FailErrno(EROFS, "removing a file");
  struct stat victim {};
  const bool known =
      lazy_ && fstatat(parent.fd, parent.name.c_str(), &victim, AT_SYMLINK_NOFOLLOW) == 0;
  if (unlinkat(parent.fd, parent.name.c_str(), remove_dir ? AT_REMOVEDIR : 0) != 0) {
    return FailErrno(fmt::format("removing {}", guest_path));
  }
  if (known) lazy_->Forget(victim);
  return {};
}

Result<void> HostDir::Mkdir(const Base& base, std::string_view guest_path, mode_t mode) const {
  Parent parent = FLURRY_TRY(ResolveParent(base, guest_path));
  std::string name(StripTrailingSlashes(parent.name));
  if (name == "." || name == "..") return FailErrno(EEXIST, "creating a directory");
  if (!writable_) {
    struct stat st {};
    if (fstatat(parent.fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) == 0) {
      return FailErrno(EEXIST, "creating a directory");
    }
    return FailErrno(EROFS, "creating a directory");
  }
  if (mkdirat(parent.fd, name.c_str(), mode & 0777) != 0) {
    return FailErrno(fmt::format("creating directory {}", guest_path));
  }
  // Set the mode exactly (mkdirat applied the host umask).
  UniqueFd dir(openat(parent.fd, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (dir.valid()) (void)fchmod(dir.get(), mode & 0777);
  return {};
}

Result<void> HostDir::Rename(const Base& old_base, std::string_view old_path, const Base& new_base,
                             std::string_view new_path, unsigned flags) const {
  if ((flags & ~(RENAME_NOREPLACE | RENAME_EXCHANGE)) != 0 ||
      (flags == (RENAME_NOREPLACE | RENAME_EXCHANGE))) {
    return FailErrno(EINVAL, "rename flags");
  }
  Parent from = FLURRY_TRY(ResolveParent(old_base, old_path));
  Parent to = FLURRY_TRY(ResolveParent(new_base, new_path));
  for (const Parent* p : {&from, &to}) {
    std::string_view name = StripTrailingSlashes(p->name);
    if (name == "." || name == "..") return FailErrno(EBUSY, "renaming . or ..");
  }
  if (!writable_) return FailErrno(EROFS, "renaming a file");
  struct stat victim {};  // what the rename replaces (an exchange replaces nothing)
  const bool known = lazy_ && (flags & RENAME_EXCHANGE) == 0 &&
                     fstatat(to.fd, to.name.c_str(), &victim, AT_SYMLINK_NOFOLLOW) == 0;
  if (syscall(SYS_renameat2, from.fd, from.name.c_str(), to.fd, to.name.c_str(), flags) != 0) {
    return FailErrno(fmt::format("renaming {}", old_path));
  }
  if (known) lazy_->Forget(victim);
  return {};
}

}  // namespace flurry
