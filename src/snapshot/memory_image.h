// A snapshot directory's memory image (docs/formats/snapshot.md) as a PageSource: pages are
// read from DIR/memory.img when they are wanted (restoring eagerly, or on demand).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "base/error.h"
#include "base/unique_fd.h"
#include "memory/page_source.h"

namespace flurry {

inline constexpr const char* kSnapshotDescriptorFile = "descriptor.fvd";
inline constexpr const char* kSnapshotMemoryFile = "memory.img";
// In a snapshot of a VM of several processes: the directory of process `pid` (not init's,
// which is the snapshot directory itself), holding its descriptor and memory image.
inline std::string ProcessSnapshotDirectory(const std::string& directory, int32_t pid) {
  return directory + "/process-" + std::to_string(pid);
}

class MemoryImageSource : public PageSource {
 public:
  // Opens DIR/memory.img and checks that it holds `ram_size` bytes.
  static Result<std::unique_ptr<MemoryImageSource>> Open(const std::string& directory,
                                                         uint64_t ram_size);
  Result<void> Fetch(uint64_t first_page, uint32_t count, uint8_t* out) override;
  std::string Describe() const override { return "snapshot file " + path_; }

 private:
  MemoryImageSource(UniqueFd fd, std::string path, uint64_t size)
      : fd_(std::move(fd)), path_(std::move(path)), size_(size) {}
  UniqueFd fd_;
  std::string path_;
  uint64_t size_;
};

}  // namespace flurry
