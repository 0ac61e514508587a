#include "guest/lazy_files.h"

#include <dirent.h>  // DT_*
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "base/unique_fd.h"

namespace flurry {
namespace {

constexpr uint32_t kChunkBytes = 1u << 20;

timespec ToTimespec(int64_t ns) {
  timespec ts{};
  ts.tv_sec = static_cast<time_t>(ns / 1'000'000'000);
  ts.tv_nsec = static_cast<long>(ns % 1'000'000'000);
  if (ts.tv_nsec < 0) {
    ts.tv_nsec += 1'000'000'000;
    --ts.tv_sec;
  }
  return ts;
}

Result<void> SetTimes(int dir_fd, const std::string& path, int64_t mtime_ns) {
  const timespec times[2] = {{0, UTIME_OMIT}, ToTimespec(mtime_ns)};
  if (utimensat(dir_fd, path.c_str(), times, AT_SYMLINK_NOFOLLOW) != 0) {
    return FailErrno(fmt::format("setting the time of /{}", path));
  }
  return {};
}

// An fd of the file behind `fd` open for writing, even when its mode has no write bit for us.
Result<UniqueFd> ReopenForWriting(int fd, mode_t mode) {
  const std::string self = fmt::format("/proc/self/fd/{}", fd);
  UniqueFd writer(open(self.c_str(), O_WRONLY | O_CLOEXEC));
  if (writer.valid()) return writer;
  if (errno != EACCES) return FailErrno("reopening it for writing");
  if (fchmod(fd, (mode & 07777) | S_IWUSR) != 0) return FailErrno("making it writable");
  writer.Reset(open(self.c_str(), O_WRONLY | O_CLOEXEC));
  const int err = errno;
  (void)fchmod(fd, mode & 07777);
  if (!writer.valid()) return FailErrno(err, "reopening it for writing");
  return writer;
}

Result<void> WriteAllAt(int fd, const uint8_t* data, size_t size, uint64_t offset) {
  size_t done = 0;
  while (done < size) {
    const ssize_t w = pwrite(fd, data + done, size - done, static_cast<off_t>(offset + done));
    if (w < 0) {
      if (errno == EINTR) continue;
      return FailErrno("writing the file");
    }
    done += static_cast<size_t>(w);
  }
  return {};
}

// Copies all of `from` (from its start) to `to` (from its start); returns the bytes copied.
Result<uint64_t> CopyWhole(int from, int to) {
  loff_t in = 0, out = 0;
  while (true) {
    const ssize_t n = copy_file_range(from, &in, to, &out, 1u << 30, 0);
    if (n == 0) return static_cast<uint64_t>(in);
    if (n > 0) continue;
    if (errno == EINTR) continue;
    if (errno != EXDEV && errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP) {
      return FailErrno("copying from the host cache");
    }
    break;  // no copy_file_range between these files: read and write
  }
  std::vector<uint8_t> buffer(kChunkBytes);
  while (true) {
    const ssize_t n = pread(from, buffer.data(), buffer.size(), in);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("reading the host cache");
    }
    if (n == 0) return static_cast<uint64_t>(in);
    FLURRY_TRY(WriteAllAt(to, buffer.data(), static_cast<size_t>(n), static_cast<uint64_t>(out)));
    in += n;
    out += n;
  }
}

}  // namespace

Result<std::unique_ptr<LazyFiles>> LazyFiles::Materialize(const FileTree& tree,
                                                          const std::string& local_root,
                                                          std::unique_ptr<FileSource> source) {
  UniqueFd root(open(local_root.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC));
  if (!root.valid()) return FailErrno(local_root);
  std::unique_ptr<LazyFiles> files(new LazyFiles(std::move(source)));
  // Parents come first (DecodeFileTree checked it), so every path's directories exist by the
  // time it is made, and none of them is a symlink: each was made here as a directory.
  for (size_t i = 0; i < tree.entries.size(); ++i) {
    const FileTreeEntry& e = tree.entries[i];
    const auto context = [&e] { return fmt::format("laying out /{}", e.path); };
    switch (e.type) {
      case FileTreeType::kDirectory:
        if (mkdirat(root.get(), e.path.c_str(), 0700) != 0) return FailErrno(context());
        break;  // its mode and time once its entries are in (below)
      case FileTreeType::kSymlink:
        if (symlinkat(e.target.c_str(), root.get(), e.path.c_str()) != 0) {
          return FailErrno(context());
        }
        FLURRY_TRY(SetTimes(root.get(), e.path, e.mtime_ns));
        break;
      case FileTreeType::kRegular: {
        UniqueFd fd(openat(root.get(), e.path.c_str(),
                           O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600));
        if (!fd.valid()) return FailErrno(context());
        if (e.size > 0) {
          if (ftruncate(fd.get(), static_cast<off_t>(e.size)) != 0) return FailErrno(context());
          struct stat st {};
          if (fstat(fd.get(), &st) != 0) return FailErrno(context());
          files->pending_[{st.st_dev, st.st_ino}] = Pending{static_cast<uint32_t>(i), e.path};
          ++files->stats_.placeholders;
        }
        if (fchmod(fd.get(), e.mode) != 0) return FailErrno(context());
        const timespec times[2] = {{0, UTIME_OMIT}, ToTimespec(e.mtime_ns)};
        if (futimens(fd.get(), times) != 0) return FailErrno(context());
        break;
      }
    }
  }
  // Directories last, deepest first: their modes may forbid adding entries, and adding an
  // entry changes a directory's mtime.
  for (size_t i = tree.entries.size(); i-- > 0;) {
    const FileTreeEntry& e = tree.entries[i];
    if (e.type != FileTreeType::kDirectory) continue;
    if (fchmodat(root.get(), e.path.c_str(), e.mode, 0) != 0) {
      return FailErrno(fmt::format("setting the mode of /{}", e.path));
    }
    FLURRY_TRY(SetTimes(root.get(), e.path, e.mtime_ns));
  }
  return files;
}

Result<void> LazyFiles::Ensure(int fd, int open_flags) {
  if (pending_.empty()) return {};
  struct stat st {};
  if (fstat(fd, &st) != 0) return FailErrno("fstat");
  if (!S_ISREG(st.st_mode)) return {};
  auto it = pending_.find({st.st_dev, st.st_ino});
  if (it == pending_.end()) return {};
  const Pending pending = it->second;
  pending_.erase(it);
  if (open_flags & O_TRUNC) return {};  // emptied: there is nothing to fetch
  if (auto fetched = Fetch(fd, pending, st); !fetched) {
    pending_[{st.st_dev, st.st_ino}] = pending;  // the next open tries again
    return fetched;
  }
  return {};
}

Result<uint64_t> LazyFiles::Download(const Pending& pending, int writer) {
  std::vector<uint8_t> buffer(kChunkBytes);
  uint64_t offset = 0;
  while (true) {
    const uint32_t n =
        FLURRY_TRY(source_->ReadFile(pending.index, offset, buffer.data(), kChunkBytes));
    if (n == 0) return offset;
    if (offset + n > kMaxFileTreeFileSize) return FailErrno(EFBIG, "the file keeps growing");
    FLURRY_TRY(WriteAllAt(writer, buffer.data(), n, offset));
    offset += n;
  }
}

Result<UniqueFd> LazyFiles::FromCache(const Pending& pending, bool* fetched_here) {
  *fetched_here = false;
  const std::string base = fmt::format("{}/{}", cache_dir_, pending.index);
  UniqueFd lock(open((base + ".lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock.valid()) return FailErrno("the host cache");
  while (flock(lock.get(), LOCK_EX) != 0) {
    if (errno != EINTR) return FailErrno("locking the host cache");
  }
  // Under the lock: a whole copy is there, or this clone makes it.
  UniqueFd whole(open(base.c_str(), O_RDONLY | O_CLOEXEC));
  if (whole.valid()) return whole;
  UniqueFd part(open((base + ".part").c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!part.valid()) return FailErrno("the host cache");
  FLURRY_TRY(Download(pending, part.get()));
  if (rename((base + ".part").c_str(), base.c_str()) != 0) return FailErrno("the host cache");
  *fetched_here = true;
  return part;  // unlocked when `lock` closes
}

Result<void> LazyFiles::Fetch(int fd, const Pending& pending, const struct stat& st) {
  const auto context = [&] {
    return fmt::format("fetching /{} from {}", pending.path, source_->Describe());
  };
  UniqueFd writer = FLURRY_TRY_CTX(ReopenForWriting(fd, st.st_mode), context());
  uint64_t size = 0;
  bool cached = false;
  if (!cache_dir_.empty()) {
    bool fetched_here = false;
    UniqueFd copy = FLURRY_TRY_CTX(FromCache(pending, &fetched_here), context());
    size = FLURRY_TRY_CTX(CopyWhole(copy.get(), writer.get()), context());
    cached = !fetched_here;
  } else {
    size = FLURRY_TRY_CTX(Download(pending, writer.get()), context());
  }
  // The parent's file may have changed size since the tree was taken: the bytes decide.
  if (size != static_cast<uint64_t>(st.st_size) &&
      ftruncate(writer.get(), static_cast<off_t>(size)) != 0) {
    return FailErrno(context());
  }
  // Writing moved the mtime: the file keeps the parent's.
  const timespec times[2] = {{0, UTIME_OMIT}, st.st_mtim};
  (void)futimens(writer.get(), times);
  ++stats_.fetched_files;
  stats_.fetched_bytes += size;
  if (cached) ++stats_.cached_files;
  return {};
}

void LazyFiles::Forget(const struct stat& st) { pending_.erase({st.st_dev, st.st_ino}); }

Result<void> LazyFiles::FetchAll(int root_fd) {
  if (pending_.empty()) return {};
  FLURRY_TRY(FetchAllUnder(root_fd, 0));
  // What is left is no longer reachable from the root (unlinked while open: fetched at open).
  pending_.clear();
  return {};
}

Result<void> LazyFiles::FetchAllUnder(int dir_fd, uint32_t depth) {
  if (depth > kMaxFileTreeDepth) return {};
  const std::vector<DirectoryEntry> names = FLURRY_TRY(ListDirectory(dir_fd));
  for (const auto& [name, type] : names) {
    if (pending_.empty()) return {};
    if (type == DT_DIR) {
      UniqueFd sub(openat(dir_fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
      if (sub.valid()) FLURRY_TRY(FetchAllUnder(sub.get(), depth + 1));
    } else if (type == DT_REG || type == DT_UNKNOWN) {
      UniqueFd fd(openat(dir_fd, name.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC));
      if (fd.valid()) FLURRY_TRY(Ensure(fd.get(), 0));
    }
  }
  return {};
}

}  // namespace flurry
