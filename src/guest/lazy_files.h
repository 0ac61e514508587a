// LazyFiles: a remote clone's copy of its parent's --dir, filled on demand.
//
// A clone on another host gets an empty directory of its own from its daemon. Materialize lays
// the parent's file tree (file_tree.h) out in it at once — directories, symlinks, and every
// regular file as a placeholder with the right size, mode and mtime but no data — so that
// listings and stat() are right from the start. The first open of a placeholder (HostDir::OpenAt
// calls Ensure) fetches the file's bytes from the parent host (FileSource) into it; later opens
// and other clones' files are not affected. The clone's writes go to its own copy: they stay
// private, as a local clone's do (the directory is removed with the clone).
//
// Placeholders are known by device and inode. HostDir tells Forget about a file the guest
// unlinks or renames over, so that a new file reusing the inode is never taken for one. An open
// with O_TRUNC needs no bytes: the placeholder just stops being one.
//
// Clones of one sf_clone on one host can share what they fetch: with a host cache directory
// (ShareFetchesThrough; flurryd gives its clones of one call the same one), a file's bytes
// cross the network once per host. The first clone to want a file fetches it into the cache
// (`INDEX.part`, renamed to `INDEX` when whole) under an flock(2) on `INDEX.lock`, so the
// others wait for it, then copy it; a clone that dies mid-fetch releases the lock and leaves
// only a `.part` the next one overwrites.
//
// Owner: the guest's root HostDir (shared with nobody else). Thread: the vCPU thread.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "guest/file_tree.h"

namespace flurry {

// Where the bytes of a remote clone's files come from: the parent host's page server
// (docs/protocols/page_server.md, "Files").
class FileSource {
 public:
  virtual ~FileSource() = default;
  // The encoded file tree (file_tree.h) of the parent's --dir.
  virtual Result<std::vector<uint8_t>> FetchFileTree() = 0;
  // Up to `max` bytes of the tree's entry `index` from `offset`; 0 at the end of the file.
  virtual Result<uint32_t> ReadFile(uint32_t index, uint64_t offset, uint8_t* out,
                                    uint32_t max) = 0;
  virtual std::string Describe() const = 0;
};

class LazyFiles {
 public:
  struct Stats {
    uint64_t placeholders = 0;   // regular files laid out without their bytes
    uint64_t fetched_files = 0;  // of those, fetched since (from the network or the cache)
    uint64_t fetched_bytes = 0;
    uint64_t cached_files = 0;  // of the fetched, copied from the host cache another clone filled
  };

  // Lays `tree` out under `local_root` (an existing directory that must not hold any of the
  // tree's paths) and returns the placeholders' bookkeeping, fetching from `source`.
  static Result<std::unique_ptr<LazyFiles>> Materialize(const FileTree& tree,
                                                        const std::string& local_root,
                                                        std::unique_ptr<FileSource> source);

  // After `fd` (a host fd inside the root) was opened with the guest's `open_flags`: a
  // placeholder gets its bytes now (with O_TRUNC: none). Other files are left alone.
  Result<void> Ensure(int fd, int open_flags);
  // The file `st` describes is going away (unlinked, renamed over): never fetch into its inode.
  void Forget(const struct stat& st);
  // Fetches every placeholder left under `root_fd` (the directory Materialize filled, wherever
  // the guest has moved files in it): before the VM is copied by fork(), since a copy cannot
  // share this connection.
  Result<void> FetchAll(int root_fd);

  // Fetches go through the host cache directory `dir` (see above).
  void ShareFetchesThrough(std::string dir) { cache_dir_ = std::move(dir); }

  bool has_pending() const { return !pending_.empty(); }
  const Stats& stats() const { return stats_; }

 private:
  struct Pending {
    uint32_t index = 0;  // in the file tree
    std::string path;    // as the tree names it (for messages)
  };
  using Key = std::pair<dev_t, ino_t>;

  explicit LazyFiles(std::unique_ptr<FileSource> source) : source_(std::move(source)) {}
  Result<void> Fetch(int fd, const Pending& pending, const struct stat& st);
  // Writes the file's bytes from the network to `writer`; returns how many.
  Result<uint64_t> Download(const Pending& pending, int writer);
  // The cache's complete copy of the file (fetching it first if no clone has).
  Result<UniqueFd> FromCache(const Pending& pending, bool* fetched_here);
  Result<void> FetchAllUnder(int dir_fd, uint32_t depth);

  std::unique_ptr<FileSource> source_;
  std::string cache_dir_;  // empty: no host cache
  std::map<Key, Pending> pending_;
  Stats stats_;
};

}  // namespace flurry
