// FileTree: the shape of a guest's --dir — every directory, regular file and symlink with its
// permission bits, size and modification time, but no file contents — as the parent host's
// page server sends it to remote clones (docs/protocols/page_server.md, "Files"). A remote
// clone lays the tree out in a directory of its own and fetches a file's bytes when the guest
// first opens it (lazy_files.h).
//
// Plain data. The encoding is little-endian, capped and checked field by field before use:
// a tree comes from a peer.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"
#include "guest/host_dir.h"

namespace flurry {

enum class FileTreeType : uint8_t {
  kDirectory = 1,
  kRegular = 2,
  kSymlink = 3,
};

struct FileTreeEntry {
  FileTreeType type = FileTreeType::kRegular;
  uint32_t mode = 0;     // permission bits (07777)
  uint64_t size = 0;     // regular files: bytes; others: 0
  int64_t mtime_ns = 0;  // st_mtim, nanoseconds since the epoch
  std::string path;      // relative to the root: "a/b/c" (no "", ".", ".." or leading '/')
  std::string target;    // symlinks: what the link says (never followed by flurry)
};

struct FileTree {
  // Parents come before their children (a depth-first walk); paths are unique.
  std::vector<FileTreeEntry> entries;
};

inline constexpr uint32_t kFileTreeMagic = 0x54464c46;  // "FLFT"
inline constexpr uint16_t kFileTreeVersion = 1;
inline constexpr uint32_t kMaxFileTreeEntries = 1u << 20;
inline constexpr uint32_t kMaxFileTreeBytes = 16u << 20;  // the encoded tree
inline constexpr uint32_t kMaxFileTreePath = 4095;        // bytes of a path or symlink target
inline constexpr uint32_t kMaxFileTreeDepth = 128;
inline constexpr uint64_t kMaxFileTreeFileSize = 1ULL << 40;

std::vector<uint8_t> EncodeFileTree(const FileTree& tree);
// Checks every field (types, modes, sizes, path syntax, parents before children, unique paths,
// no path below a non-directory) before returning the tree.
Result<FileTree> DecodeFileTree(const uint8_t* data, size_t size);

// Whether `path` is a well-formed relative tree path (see FileTreeEntry::path).
bool IsFileTreePath(std::string_view path);

// One entry of a directory listing: its name and readdir's d_type (DT_DIR, DT_REG, ...,
// DT_UNKNOWN where the file system does not say).
struct DirectoryEntry {
  std::string name;
  unsigned char type = 0;
};
// The entries of the directory `dir_fd` (an O_PATH fd will do) but "." and "..", in readdir
// order.
Result<std::vector<DirectoryEntry>> ListDirectory(int dir_fd);

// Walks the directory `root` (never following a symlink; FIFOs, sockets and devices are left
// out). Errors: E2BIG when the tree exceeds the caps above, or what the walk met.
Result<FileTree> ScanFileTree(const HostDir& root);

}  // namespace flurry
