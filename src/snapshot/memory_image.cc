#include "snapshot/memory_image.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace flurry {

Result<std::unique_ptr<MemoryImageSource>> MemoryImageSource::Open(const std::string& directory,
                                                                   uint64_t ram_size) {
  const std::string path = directory + "/" + kSnapshotMemoryFile;
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return FailErrno(path);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return FailErrno(path);
  if (static_cast<uint64_t>(st.st_size) != ram_size) {
    return Fail("{}: {} bytes, but the descriptor says guest memory is {} bytes", path, st.st_size,
                ram_size);
  }
  return std::unique_ptr<MemoryImageSource>(new MemoryImageSource(std::move(fd), path, ram_size));
}

Result<void> MemoryImageSource::Fetch(uint64_t first_page, uint32_t count, uint8_t* out) {
  const uint64_t offset = first_page * 4096, length = uint64_t{count} * 4096;
  if (offset > size_ || length > size_ - offset) {
    return Fail("{}: pages {:#x}+{} lie outside the image", path_, offset, count);
  }
  uint64_t done = 0;
  while (done < length) {
    ssize_t n = pread(fd_.get(), out + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      return FailErrno(n == 0 ? EIO : errno,
                       fmt::format("{}: reading pages at {:#x}", path_, offset));
    done += static_cast<uint64_t>(n);
  }
  return {};
}

}  // namespace flurry
