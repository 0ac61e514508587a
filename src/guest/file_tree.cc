#include "guest/file_tree.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <set>

#include "base/unique_fd.h"

namespace flurry {
namespace {

struct TreeHeader {
  uint32_t magic;
  uint16_t version;
  uint16_t reserved;  // 0
  uint32_t count;
  uint32_t reserved2;  // 0
};
static_assert(sizeof(TreeHeader) == 16);

struct EntryHeader {
  uint8_t type;  // FileTreeType
  uint8_t reserved;
  uint16_t path_bytes;
  uint16_t target_bytes;
  uint16_t reserved2;
  uint32_t mode;
  uint32_t reserved3;
  uint64_t size;
  int64_t mtime_ns;
};
static_assert(sizeof(EntryHeader) == 32);

template <typename T>
void Append(std::vector<uint8_t>& out, const T& value) {
  const auto* bytes = reinterpret_cast<const uint8_t*>(&value);
  out.insert(out.end(), bytes, bytes + sizeof value);
}

int64_t MtimeNs(const struct stat& st) {
  return static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
}

// The depth-first walk of ScanFileTree.
class Scanner {
 public:
  Result<void> Walk(int dir_fd, const std::string& prefix, uint32_t depth) {
    if (depth > kMaxFileTreeDepth) return FailErrno(E2BIG, "--dir is nested too deeply");
    std::vector<DirectoryEntry> listed =
        FLURRY_TRY_CTX(ListDirectory(dir_fd), fmt::format("/{}", prefix));
    std::vector<std::string> names;
    for (DirectoryEntry& e : listed) names.push_back(std::move(e.name));
    std::sort(names.begin(), names.end());
    for (const std::string& name : names) {
      const std::string path = prefix.empty() ? name : prefix + "/" + name;
      struct stat st {};
      if (fstatat(dir_fd, name.c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
        if (errno == ENOENT) continue;  // gone since the listing
        return FailErrno(fmt::format("/{}", path));
      }
      FileTreeEntry entry;
      entry.path = path;
      entry.mode = st.st_mode & 07777;
      entry.mtime_ns = MtimeNs(st);
      if (S_ISDIR(st.st_mode)) {
        entry.type = FileTreeType::kDirectory;
      } else if (S_ISREG(st.st_mode)) {
        entry.type = FileTreeType::kRegular;
        entry.size = static_cast<uint64_t>(st.st_size);
        if (entry.size > kMaxFileTreeFileSize) {
          return FailErrno(E2BIG, fmt::format("/{} is larger than 1 TiB", path));
        }
      } else if (S_ISLNK(st.st_mode)) {
        entry.type = FileTreeType::kSymlink;
        std::string target(kMaxFileTreePath + 1, '\0');
        const ssize_t n = readlinkat(dir_fd, name.c_str(), target.data(), target.size());
        if (n < 0) return FailErrno(fmt::format("reading the symlink /{}", path));
        if (static_cast<size_t>(n) > kMaxFileTreePath) {
          return FailErrno(E2BIG, fmt::format("the symlink /{} is too long", path));
        }
        target.resize(static_cast<size_t>(n));
        entry.target = std::move(target);
      } else {
        continue;  // FIFOs, sockets, devices: not part of what clones see
      }
      if (path.size() > kMaxFileTreePath) {
        return FailErrno(E2BIG, fmt::format("a path of {} bytes", path.size()));
      }
      bytes_ += sizeof(EntryHeader) + entry.path.size() + entry.target.size();
      if (tree_.entries.size() >= kMaxFileTreeEntries || bytes_ > kMaxFileTreeBytes) {
        return FailErrno(E2BIG, fmt::format("--dir has more than {} entries or {} bytes of names",
                                            kMaxFileTreeEntries, kMaxFileTreeBytes));
      }
      const bool is_dir = entry.type == FileTreeType::kDirectory;
      tree_.entries.push_back(std::move(entry));
      if (is_dir) {
        UniqueFd sub(openat(dir_fd, name.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
        if (!sub.valid()) {
          if (errno == ENOENT) continue;
          return FailErrno(fmt::format("/{}", path));
        }
        FLURRY_TRY(Walk(sub.get(), path, depth + 1));
      }
    }
    return {};
  }

  FileTree Take() { return std::move(tree_); }

 private:
  FileTree tree_;
  size_t bytes_ = sizeof(TreeHeader);
};

}  // namespace

Result<std::vector<DirectoryEntry>> ListDirectory(int dir_fd) {
  // fdopendir takes an fd of its own, open for reading (`dir_fd` may be an O_PATH fd).
  const int listing = openat(dir_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (listing < 0) return FailErrno("listing a directory");
  DIR* dir = fdopendir(listing);
  if (dir == nullptr) {
    const int err = errno;
    close(listing);
    return FailErrno(err, "listing a directory");
  }
  std::vector<DirectoryEntry> entries;
  errno = 0;
  while (const dirent* e = readdir(dir)) {
    if (std::strcmp(e->d_name, ".") != 0 && std::strcmp(e->d_name, "..") != 0) {
      entries.push_back({e->d_name, e->d_type});
    }
  }
  const int read_error = errno;
  closedir(dir);
  if (read_error != 0) return FailErrno(read_error, "listing a directory");
  return entries;
}

bool IsFileTreePath(std::string_view path) {
  if (path.empty() || path.size() > kMaxFileTreePath || path.front() == '/' || path.back() == '/') {
    return false;
  }
  size_t start = 0;
  while (start <= path.size()) {
    size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    const std::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..") return false;
    if (part.find('\0') != std::string_view::npos) return false;
    start = end + 1;
  }
  return true;
}

std::vector<uint8_t> EncodeFileTree(const FileTree& tree) {
  std::vector<uint8_t> out;
  Append(out, TreeHeader{kFileTreeMagic, kFileTreeVersion, 0,
                         static_cast<uint32_t>(tree.entries.size()), 0});
  for (const FileTreeEntry& e : tree.entries) {
    EntryHeader h{};
    h.type = static_cast<uint8_t>(e.type);
    h.path_bytes = static_cast<uint16_t>(e.path.size());
    h.target_bytes = static_cast<uint16_t>(e.target.size());
    h.mode = e.mode;
    h.size = e.size;
    h.mtime_ns = e.mtime_ns;
    Append(out, h);
    out.insert(out.end(), e.path.begin(), e.path.end());
    out.insert(out.end(), e.target.begin(), e.target.end());
  }
  return out;
}

Result<FileTree> DecodeFileTree(const uint8_t* data, size_t size) {
  if (size > kMaxFileTreeBytes) return FailErrno(EBADMSG, "a file tree larger than its cap");
  if (size < sizeof(TreeHeader)) return FailErrno(EBADMSG, "a truncated file tree");
  TreeHeader header;
  std::memcpy(&header, data, sizeof header);
  if (header.magic != kFileTreeMagic) return FailErrno(EBADMSG, "not a file tree");
  if (header.version != kFileTreeVersion) {
    return FailErrno(EBADMSG, fmt::format("file tree version {} (this flurry reads {})",
                                          header.version, kFileTreeVersion));
  }
  if (header.reserved != 0 || header.reserved2 != 0) {
    return FailErrno(EBADMSG, "a file tree with reserved fields set");
  }
  if (header.count > kMaxFileTreeEntries) return FailErrno(EBADMSG, "too many file tree entries");
  FileTree tree;
  tree.entries.reserve(header.count);
  // Every directory seen so far: a path's parent must be one of them.
  std::set<std::string, std::less<>> directories;
  std::set<std::string, std::less<>> paths;
  size_t at = sizeof header;
  for (uint32_t i = 0; i < header.count; ++i) {
    const auto bad = [i](std::string_view what) {
      return FailErrno(EBADMSG, fmt::format("file tree entry {}: {}", i, what));
    };
    if (size - at < sizeof(EntryHeader)) return bad("truncated");
    EntryHeader h;
    std::memcpy(&h, data + at, sizeof h);
    at += sizeof h;
    if (h.reserved != 0 || h.reserved2 != 0 || h.reserved3 != 0) return bad("reserved fields");
    if (h.path_bytes > kMaxFileTreePath || h.target_bytes > kMaxFileTreePath) {
      return bad("a name too long");
    }
    if (size - at < size_t{h.path_bytes} + h.target_bytes) return bad("truncated");
    FileTreeEntry e;
    e.path.assign(reinterpret_cast<const char*>(data + at), h.path_bytes);
    at += h.path_bytes;
    e.target.assign(reinterpret_cast<const char*>(data + at), h.target_bytes);
    at += h.target_bytes;
    e.mode = h.mode;
    e.size = h.size;
    e.mtime_ns = h.mtime_ns;
    if (h.type < static_cast<uint8_t>(FileTreeType::kDirectory) ||
        h.type > static_cast<uint8_t>(FileTreeType::kSymlink)) {
      return bad("an unknown type");
    }
    e.type = static_cast<FileTreeType>(h.type);
    if ((e.mode & ~07777u) != 0) return bad("mode bits beyond 07777");
    if (e.type == FileTreeType::kRegular ? e.size > kMaxFileTreeFileSize : e.size != 0) {
      return bad("a bad size");
    }
    if ((e.type == FileTreeType::kSymlink) == e.target.empty() ||
        e.target.find('\0') != std::string::npos) {
      return bad("a bad symlink target");
    }
    if (!IsFileTreePath(e.path)) return bad("a malformed path");
    const size_t slash = e.path.rfind('/');
    if (slash != std::string::npos && !directories.contains(e.path.substr(0, slash))) {
      return bad("a path whose parent is not a directory listed before it");
    }
    if (!paths.insert(e.path).second) return bad("a path listed twice");
    if (e.type == FileTreeType::kDirectory) directories.insert(e.path);
    tree.entries.push_back(std::move(e));
  }
  if (at != size) return FailErrno(EBADMSG, "bytes after the file tree");
  return tree;
}

Result<FileTree> ScanFileTree(const HostDir& root) {
  Scanner scanner;
  FLURRY_TRY_CTX(scanner.Walk(root.root_fd(), "", 0), "scanning --dir");
  return scanner.Take();
}

}  // namespace flurry
