#include "vmm/served_files.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <optional>

#include "guest/file_tree.h"

namespace flurry {
namespace {

// The page server's view of the files: the tree it sent, and the file last read (reads of a
// file come in order, chunk after chunk). Thread: the page server's one thread.
struct ServedTree {
  const HostDir* root = nullptr;
  std::optional<FileTree> tree;
  uint32_t open_index = 0;
  UniqueFd open_file;
};

}  // namespace

PageServer::FileService ServeFilesOf(const HostDir& root) {
  auto served = std::make_shared<ServedTree>();
  served->root = &root;
  PageServer::FileService service;
  service.tree = [served]() -> Result<std::vector<uint8_t>> {
    if (!served->tree) served->tree = FLURRY_TRY(ScanFileTree(*served->root));
    return EncodeFileTree(*served->tree);
  };
  service.read = [served](uint32_t index, uint64_t offset, uint8_t* out,
                          uint32_t max) -> Result<uint32_t> {
    if (!served->tree) return FailErrno(ENOENT, "no file tree was asked for");
    if (index >= served->tree->entries.size()) return FailErrno(ENOENT, "no such file");
    const FileTreeEntry& entry = served->tree->entries[index];
    if (entry.type != FileTreeType::kRegular) return FailErrno(EINVAL, "not a regular file");
    if (!served->open_file.valid() || served->open_index != index) {
      served->open_file.Reset();
      served->open_file =
          FLURRY_TRY(served->root->OpenAt("/" + entry.path, O_RDONLY | O_NOFOLLOW, 0));
      struct stat st {};
      if (fstat(served->open_file.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
        served->open_file.Reset();
        return FailErrno(EINVAL, "not a regular file any more");
      }
      served->open_index = index;
    }
    if (offset > static_cast<uint64_t>(INT64_MAX)) return FailErrno(EINVAL, "offset");
    while (true) {
      const ssize_t n = pread(served->open_file.get(), out, max, static_cast<off_t>(offset));
      if (n >= 0) return static_cast<uint32_t>(n);
      if (errno != EINTR) return FailErrno("reading a file");
    }
  };
  return service;
}

}  // namespace flurry
