#include "memory/guest_memory.h"

#include <sys/mman.h>

#include "arch/x86_64/layout.h"
#include "base/check.h"

namespace flurry {

Result<GuestMemory> GuestMemory::Create(uint64_t size) {
  if (size % x86::kHugePageSize != 0)
    return Fail("guest memory size {} is not a multiple of 2 MiB", size);
  Mapping mapping = FLURRY_TRY_CTX(Mapping::Anonymous(size), "allocating guest memory");
  return GuestMemory(std::move(mapping));
}

void GuestMemory::AdviseHugePages(uint64_t start, uint64_t length) const {
  if (start >= size() || length == 0) return;
  if (length > size() - start) length = size() - start;
  (void)madvise(host_base() + start, length, MADV_HUGEPAGE);
}

uint8_t* GuestMemory::HostPointer(uint64_t gpa, uint64_t len) const {
  FLURRY_CHECK(gpa <= size() && len <= size() - gpa);
  return host_base() + gpa;
}

Result<std::span<uint8_t>> GuestMemory::UserSpan(uint64_t addr, uint64_t len) const {
  if (addr < x86::kUserBase || addr > size() || len > size() - addr) {
    return FailErrno(EFAULT, fmt::format("guest range {:#x}+{:#x}", addr, len));
  }
  return std::span<uint8_t>(host_base() + addr, len);
}

Result<void> GuestMemory::Read(uint64_t addr, void* dst, uint64_t len) const {
  auto span = FLURRY_TRY(UserSpan(addr, len));
  if (len != 0) std::memcpy(dst, span.data(), len);
  return {};
}

Result<void> GuestMemory::Write(uint64_t addr, const void* src, uint64_t len) const {
  auto span = FLURRY_TRY(UserSpan(addr, len));
  if (len != 0) std::memcpy(span.data(), src, len);
  return {};
}

Result<std::string> GuestMemory::ReadCString(uint64_t addr, uint64_t max_len) const {
  if (addr < x86::kUserBase || addr >= size()) {
    return FailErrno(EFAULT, fmt::format("guest string at {:#x}", addr));
  }
  uint64_t available = size() - addr;
  uint64_t limit = available < max_len + 1 ? available : max_len + 1;
  const char* start = reinterpret_cast<const char*>(host_base() + addr);
  const void* nul = std::memchr(start, 0, limit);
  if (nul == nullptr) {
    if (limit == available && available <= max_len) {
      return FailErrno(EFAULT, fmt::format("guest string at {:#x} runs off memory", addr));
    }
    return FailErrno(ENAMETOOLONG, fmt::format("guest string at {:#x}", addr));
  }
  return std::string(start, static_cast<const char*>(nul) - start);
}

Result<void> GuestMemory::Discard(uint64_t addr, uint64_t len) const {
  auto span = FLURRY_TRY(UserSpan(addr, len));
  if (addr % x86::kPageSize != 0 || len % x86::kPageSize != 0) {
    return FailErrno(EINVAL, fmt::format("discarding unaligned range {:#x}+{:#x}", addr, len));
  }
  if (len != 0 && madvise(span.data(), len, MADV_DONTNEED) != 0) {
    return FailErrno(fmt::format("discarding guest range {:#x}+{:#x}", addr, len));
  }
  return {};
}

}  // namespace flurry
