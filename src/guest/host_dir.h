// HostDir: the host directory a guest sees as its root "/" (`flurry run --dir HOSTDIR[:rw]`).
//
// Holds an O_PATH fd of the directory, whether the guest may modify it (":rw") and its host
// path. Owner: the guest's FdTable. Thread: the vCPU thread.
//
// Confinement. Every lookup of a guest path goes through openat2(2) with RESOLVE_NO_MAGICLINKS,
// so neither "..", absolute paths, symlinks (absolute, relative, chains) nor /proc magic links
// can name anything outside the directory:
//  * absolute paths, and relative paths from the root, resolve from the root fd with
//    RESOLVE_IN_ROOT (chroot semantics: "/" and ".." at the top are the root itself);
//  * relative paths from another directory (a guest dirfd or the cwd, both opened through this
//    class) first resolve from that directory with RESOLVE_BENEATH. When the path leaves the
//    directory (EXDEV: a "..", an absolute symlink) it resolves again from the root with
//    RESOLVE_IN_ROOT, as the directory's guest path joined with the relative path. Both
//    lookups stay inside the root; the first also survives renames of the directory.
// Operations on a last component that must not be followed (unlink, rmdir, mkdir, rename)
// resolve the parent directory that way and apply the *at syscall to the last component only.
// stat/readlink/access open the path itself with O_PATH (plus O_NOFOLLOW when not following).
//
// A remote clone's root may hold placeholders of its parent's files (lazy_files.h): OpenAt fills
// one before returning it; Unlink and Rename tell LazyFiles about the files they remove.
//
// Errors carry the errno the guest should see (ENOENT, EROFS, ENOTDIR, ...).
#pragma once

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <memory>
#include <string>
#include <string_view>

#include "base/error.h"
#include "base/unique_fd.h"

namespace flurry {

class LazyFiles;

class HostDir {
 public:
  // Where a relative path starts: a host directory fd inside the root and its guest path.
  // fd == -1 means the root itself. Absolute paths always start at the root.
  struct Base {
    int fd = -1;
    std::string_view path = "/";
  };

  // The kernel's O_LARGEFILE (glibc's O_LARGEFILE is 0 on x86-64, but guests may pass it).
  static constexpr int kKernelLargefile = 0100000;
  // The open(2) flags a guest may pass; other bits are ignored, as openat(2) ignores them.
  static constexpr int kGuestOpenFlags = O_ACCMODE | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC |
                                         O_APPEND | O_NONBLOCK | O_DSYNC | O_DIRECT |
                                         kKernelLargefile | O_DIRECTORY | O_NOFOLLOW | O_NOATIME |
                                         O_CLOEXEC | O_SYNC | O_PATH | O_TMPFILE;

  // Opens `path` as the guest's root. Errors: "--dir PATH: No such file or directory",
  // "--dir PATH: Not a directory", or openat2 missing (Linux < 5.6).
  static Result<HostDir> Open(const std::string& path, bool writable);

  bool writable() const { return writable_; }
  const std::string& host_path() const { return host_path_; }
  int root_fd() const { return root_.get(); }

  // The root is a remote clone's copy of its parent's --dir whose files `lazy` fills on demand.
  void AttachLazyFiles(std::shared_ptr<LazyFiles> lazy) { lazy_ = std::move(lazy); }
  const LazyFiles* lazy_files() const { return lazy_.get(); }
  // Fetches every file still to be fetched (before the VM is copied by fork()).
  Result<void> FetchPendingFiles() const;

  // open(2) of a guest path with the guest's flags and mode (relative paths start at "/").
  // The host fd is always O_CLOEXEC (the guest's O_CLOEXEC belongs in the FdTable). Read-only
  // mode: write access, O_TRUNC, O_TMPFILE, and O_CREAT of a missing file give EROFS. A file
  // this call creates gets exactly mode & 0777 (the host umask is not applied).
  Result<UniqueFd> OpenAt(std::string_view guest_path, int flags, mode_t mode) const;
  Result<UniqueFd> OpenAt(const Base& base, std::string_view guest_path, int flags,
                          mode_t mode) const;

  // An O_PATH fd of the path (the symlink itself when !follow and the last component is one).
  Result<UniqueFd> Lookup(const Base& base, std::string_view guest_path, bool follow) const;

  Result<struct stat> Stat(const Base& base, std::string_view guest_path, bool follow) const;
  // The target of the symlink at the path (EINVAL if it is not a symlink).
  Result<std::string> Readlink(const Base& base, std::string_view guest_path) const;
  // access(2): mode is F_OK or R_OK|W_OK|X_OK; flags may hold AT_EACCESS, AT_SYMLINK_NOFOLLOW.
  // W_OK in read-only mode is EROFS.
  Result<void> Access(const Base& base, std::string_view guest_path, int mode, int flags) const;

  // unlink(2) or, with remove_dir, rmdir(2).
  Result<void> Unlink(const Base& base, std::string_view guest_path, bool remove_dir) const;
  // mkdir(2); the new directory gets exactly mode & 0777.
  Result<void> Mkdir(const Base& base, std::string_view guest_path, mode_t mode) const;
  // renameat2(2); flags may hold RENAME_NOREPLACE, RENAME_EXCHANGE.
  Result<void> Rename(const Base& old_base, std::string_view old_path, const Base& new_base,
                      std::string_view new_path, unsigned flags) const;

  // The guest's absolute path of a host fd opened inside the root ("/a/b"), read back from
  // /proc/self/fd; `fallback` when the kernel's path is not under the root.
  std::string GuestPathOf(int host_fd, std::string_view fallback) const;

  // "/a/b" + "../c" -> "/a/b/../c" (no normalisation: ".." after a symlink is not lexical).
  static std::string JoinGuestPath(std::string_view dir, std::string_view relative);

 private:
  HostDir(UniqueFd root, bool writable, std::string host_path, std::string canonical)
      : root_(std::move(root)),
        writable_(writable),
        host_path_(std::move(host_path)),
        canonical_(std::move(canonical)) {}

  // OpenAt without filling a placeholder.
  Result<UniqueFd> OpenUnfilled(const Base& base, std::string_view guest_path, int flags,
                                mode_t mode) const;
  // openat2 of `path` from `base` as described above; flags/mode are host openat2 values.
  Result<UniqueFd> Resolve(const Base& base, std::string_view path, uint64_t flags,
                           uint64_t mode) const;
  // The parent directory of the path's last component, as an fd (owned in `holder` unless it
  // is the base or root fd) and the last component (keeps one trailing '/', if any).
  struct Parent {
    UniqueFd holder;
    int fd = -1;
    std::string name;
  };
  Result<Parent> ResolveParent(const Base& base, std::string_view path) const;
  Result<UniqueFd> OpenReadOnly(const Base& base, std::string_view path, int flags) const;
  Result<UniqueFd> OpenCreate(const Base& base, std::string_view path, int flags,
                              mode_t mode) const;

  UniqueFd root_;                    // O_PATH | O_DIRECTORY fd of the root
  bool writable_ = false;            // ":rw"
  std::string host_path_;            // as given on the command line, made absolute
  std::string canonical_;            // the root's absolute host path as /proc/self/fd reports it
  std::shared_ptr<LazyFiles> lazy_;  // a remote clone's placeholders; null elsewhere
};

}  // namespace flurry
