#include "base/mapping.h"

#include <sys/mman.h>

namespace flurry {

Result<Mapping> Mapping::Anonymous(size_t size) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) return FailErrno(fmt::format("mapping {} bytes of memory", size));
  return Mapping(p, size);
}

Result<Mapping> Mapping::SharedAnonymous(size_t size) {
  void* p = mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return FailErrno(fmt::format("mapping {} bytes of shared memory", size));
  return Mapping(p, size);
}

Result<Mapping> Mapping::Shared(int fd, size_t size, int prot) {
  void* p = mmap(nullptr, size, prot, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) return FailErrno(fmt::format("mapping {} bytes of fd {}", size, fd));
  return Mapping(p, size);
}

Result<Mapping> Mapping::ReadOnlyFile(int fd, size_t size) {
  void* p = mmap(nullptr, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
  if (p == MAP_FAILED) return FailErrno(fmt::format("mapping {} bytes of fd {}", size, fd));
  return Mapping(p, size);
}

void Mapping::Reset() {
  if (data_ != nullptr) munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace flurry
