#include "memory/guest_memory.h"

#include <fcntl.h>
#include <sys/mman.h>

#include <algorithm>

#include "arch/x86_64/layout.h"
#include "base/check.h"

namespace flurry {
namespace {

constexpr uint64_t kPageSize = 4096;
// Remote copies go through a bounded buffer.
constexpr uint64_t kBounceChunk = 1 << 20;

Result<void> CheckRange(uint64_t size, uint64_t addr, uint64_t len, uint64_t low) {
  if (addr < low || addr > size || len > size - addr) {
    return FailErrno(EFAULT, fmt::format("guest range {:#x}+{:#x}", addr, len));
  }
  return {};
}

}  // namespace

// ---- GuestWindow ---------------------------------------------------------------------------

Result<void> GuestWindow::Load() const {
  if (bounce_.empty()) return {};
  return memory_->Read(address_, const_cast<uint8_t*>(bounce_.data()), bounce_.size());
}

Result<void> GuestWindow::Store(uint64_t n) const {
  if (bounce_.empty() || n == 0) return {};
  return memory_->Write(address_, bounce_.data(), std::min<uint64_t>(n, bounce_.size()));
}

// ---- GuestMemory -----------------------------------------------------------------------------

Result<GuestMemory> GuestMemory::Create(uint64_t size) {
  if (size % x86::kHugePageSize != 0)
    return Fail("guest memory size {} is not a multiple of 2 MiB", size);
  Mapping mapping = FLURRY_TRY_CTX(Mapping::Anonymous(size), "allocating guest memory");
  return GuestMemory(std::move(mapping), size);
}

GuestMemory GuestMemory::Remote(uint64_t size, UniqueFd mem, UniqueFd pagemap,
                                RemoteDiscard discard) {
  GuestMemory memory(Mapping(), size);
  memory.mem_ = std::move(mem);
  memory.pagemap_ = std::move(pagemap);
  memory.discard_ = std::move(discard);
  return memory;
}

void GuestMemory::AdviseHugePages(uint64_t start, uint64_t length) const {
  if (!is_local() || start >= size() || length == 0) return;
  if (length > size() - start) length = size() - start;
  (void)madvise(host_base() + start, length, MADV_HUGEPAGE);
}

uint8_t* GuestMemory::host_base() const {
  FLURRY_CHECK(is_local());
  return mapping_.data();
}

uint8_t* GuestMemory::HostPointer(uint64_t gpa, uint64_t len) const {
  FLURRY_CHECK(is_local() && gpa <= size() && len <= size() - gpa);
  return host_base() + gpa;
}

Result<void> GuestMemory::CheckUser(uint64_t addr, uint64_t len) const {
  return CheckRange(size(), addr, len, x86::kUserBase);
}

uint64_t GuestMemory::AccessibleBytes(uint64_t addr, uint64_t len, GuestAccess access) const {
  if (protections_ == nullptr || len == 0 || access == GuestAccess::kAsKernel) return len;
  const uint8_t need = access == GuestAccess::kRead ? kProtRead : kProtWrite;
  // Every syscall argument comes through here, and nearly all lie in one span: one lookup.
  if (const ProtectionMap::Span* span = protections_->SpanAt(addr);
      span != nullptr && (PageAccess(span->prot) & need) != 0 && len <= span->end - addr) {
    return len;
  }
  const uint64_t first = addr & ~(kPageSize - 1);
  std::optional<uint64_t> refused;
  protections_->ForEachAccessRun(first, addr + len - first,
                                 [&](uint64_t start, uint64_t, uint8_t allowed) {
                                   if (!refused && (allowed & need) == 0) refused = start;
                                 });
  return refused ? std::max(*refused, addr) - addr : len;
}

Result<void> GuestMemory::CheckAccess(uint64_t addr, uint64_t len, GuestAccess access) const {
  FLURRY_TRY(CheckUser(addr, len));
  if (const uint64_t ok = AccessibleBytes(addr, len, access); ok < len) {
    return FailErrno(EFAULT, fmt::format("guest page {:#x} is not {}", addr + ok,
                                         access == GuestAccess::kRead ? "readable" : "writable"));
  }
  return {};
}

Result<GuestWindow> GuestMemory::Window(uint64_t addr, uint64_t len, GuestAccess access) const {
  FLURRY_TRY(CheckAccess(addr, len, access));
  GuestWindow window;
  window.memory_ = this;
  window.address_ = addr;
  if (is_local() && (lazy_ == nullptr || lazy_->Resident(addr, len))) {
    window.bytes_ = std::span<uint8_t>(host_base() + addr, len);
  } else {
    window.bounce_.resize(len);
    window.bytes_ = std::span<uint8_t>(window.bounce_.data(), len);
  }
  return window;
}

Result<void> GuestMemory::RemoteTransfer(uint64_t gpa, void* buffer, uint64_t len,
                                         bool write) const {
  auto* bytes = static_cast<uint8_t*>(buffer);
  uint64_t done = 0;
  while (done < len) {
    const uint64_t chunk = std::min(len - done, kBounceChunk);
    ssize_t n = write ? pwrite(mem_.get(), bytes + done, chunk, static_cast<off_t>(gpa + done))
                      : pread(mem_.get(), bytes + done, chunk, static_cast<off_t>(gpa + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // An unmapped page in the guest process (never in a range we checked) or the process is
      // gone: the guest's access fails as a bad pointer would.
      const int err = n < 0 ? errno : EIO;
      return FailErrno(
          err == EIO ? EFAULT : err,
          fmt::format("{} guest memory at {:#x}", write ? "writing" : "reading", gpa + done));
    }
    done += static_cast<uint64_t>(n);
  }
  return {};
}

Result<void> GuestMemory::RawRead(uint64_t gpa, void* dst, uint64_t len) const {
  if (is_local()) {
    std::memcpy(dst, host_base() + gpa, len);
    return {};
  }
  return RemoteTransfer(gpa, dst, len, /*write=*/false);
}

Result<void> GuestMemory::RawWrite(uint64_t gpa, const void* src, uint64_t len) const {
  if (is_local()) {
    std::memcpy(host_base() + gpa, src, len);
    return {};
  }
  return RemoteTransfer(gpa, const_cast<void*>(src), len, /*write=*/true);
}

Result<void> GuestMemory::WriteOnDemand(uint64_t gpa, const uint8_t* src, uint8_t fill,
                                        uint64_t len) const {
  std::vector<uint8_t> filled;
  if (src == nullptr && fill != 0) filled.assign(kPageSize, fill);
  uint64_t done = 0;
  while (done < len) {
    const uint64_t at = gpa + done;
    const uint64_t n = std::min(len - done, kPageSize - at % kPageSize);
    const uint8_t* from = src != nullptr ? src + done : nullptr;
    if (n == kPageSize) {
      // The whole page is overwritten: install it as written, never fetch what it held.
      const uint8_t* page = from != nullptr ? from : (fill != 0 ? filled.data() : nullptr);
      if (FLURRY_TRY(lazy_->InstallPage(at / kPageSize, page))) {
        done += n;
        continue;
      }
    } else {
      FLURRY_TRY(lazy_->EnsureResident(at, n));
    }
    if (from != nullptr) {
      FLURRY_TRY(RawWrite(at, from, n));
    } else {
      const std::vector<uint8_t> bytes(n, fill);
      FLURRY_TRY(RawWrite(at, bytes.data(), n));
    }
    done += n;
  }
  return {};
}

Result<void> GuestMemory::ReadPhysical(uint64_t gpa, void* dst, uint64_t len) const {
  FLURRY_TRY(CheckRange(size(), gpa, len, 0));
  if (len == 0) return {};
  if (lazy_ != nullptr) FLURRY_TRY(lazy_->EnsureResident(gpa, len));
  return RawRead(gpa, dst, len);
}

Result<void> GuestMemory::WritePhysical(uint64_t gpa, const void* src, uint64_t len) const {
  FLURRY_TRY(CheckRange(size(), gpa, len, 0));
  if (len == 0) return {};
  if (lazy_ != nullptr) return WriteOnDemand(gpa, static_cast<const uint8_t*>(src), 0, len);
  return RawWrite(gpa, src, len);
}

Result<void> GuestMemory::Read(uint64_t addr, void* dst, uint64_t len) const {
  FLURRY_TRY(CheckAccess(addr, len, GuestAccess::kRead));
  return ReadPhysical(addr, dst, len);
}

Result<void> GuestMemory::Write(uint64_t addr, const void* src, uint64_t len) const {
  FLURRY_TRY(CheckAccess(addr, len, GuestAccess::kWrite));
  return WritePhysical(addr, src, len);
}

Result<void> GuestMemory::Fill(uint64_t addr, uint8_t byte, uint64_t len) const {
  FLURRY_TRY(CheckAccess(addr, len, GuestAccess::kWrite));
  return RawFill(addr, byte, len);
}

Result<void> GuestMemory::RawFill(uint64_t addr, uint8_t byte, uint64_t len) const {
  if (lazy_ != nullptr) return WriteOnDemand(addr, nullptr, byte, len);
  if (is_local()) {
    if (len != 0) std::memset(host_base() + addr, byte, len);
    return {};
  }
  std::vector<uint8_t> chunk(std::min(len, kBounceChunk), byte);
  for (uint64_t done = 0; done < len;) {
    const uint64_t n = std::min(len - done, kBounceChunk);
    FLURRY_TRY(RemoteTransfer(addr + done, chunk.data(), n, /*write=*/true));
    done += n;
  }
  return {};
}

Result<void> GuestMemory::Copy(uint64_t dst, uint64_t src, uint64_t len) const {
  FLURRY_TRY(CheckUser(dst, len));
  FLURRY_TRY(CheckUser(src, len));
  if (len == 0 || dst == src) return {};
  if (lazy_ != nullptr) {
    FLURRY_TRY(lazy_->EnsureResident(src, len));
    FLURRY_TRY(lazy_->EnsureResident(dst, len));
  }
  if (is_local()) {
    std::memmove(host_base() + dst, host_base() + src, len);
    return {};
  }
  std::vector<uint8_t> chunk(std::min(len, kBounceChunk));
  // Copy in the direction that never overwrites source bytes not yet copied.
  const bool backwards = dst > src && dst < src + len;
  for (uint64_t done = 0; done < len;) {
    const uint64_t n = std::min(len - done, kBounceChunk);
    const uint64_t offset = backwards ? len - done - n : done;
    FLURRY_TRY(RemoteTransfer(src + offset, chunk.data(), n, /*write=*/false));
    FLURRY_TRY(RemoteTransfer(dst + offset, chunk.data(), n, /*write=*/true));
    done += n;
  }
  return {};
}

Result<std::string> GuestMemory::ReadCString(uint64_t addr, uint64_t max_len) const {
  if (addr < x86::kUserBase || addr >= size()) {
    return FailErrno(EFAULT, fmt::format("guest string at {:#x}", addr));
  }
  const uint64_t available = size() - addr;
  const uint64_t limit = available < max_len + 1 ? available : max_len + 1;
  std::string out;
  // Read page by page (a string near an unmapped page must not fail on the bytes past it).
  uint64_t at = addr;
  while (out.size() < limit) {
    const uint64_t page_left = kPageSize - (at % kPageSize);
    const uint64_t n = std::min<uint64_t>(page_left, limit - out.size());
    const size_t old = out.size();
    out.resize(old + n);
    FLURRY_TRY(CheckAccess(at, n, GuestAccess::kRead));
    FLURRY_TRY(ReadPhysical(at, out.data() + old, n));
    const void* nul = std::memchr(out.data() + old, 0, n);
    if (nul != nullptr) {
      out.resize(static_cast<const char*>(nul) - out.data());
      return out;
    }
    at += n;
  }
  if (limit == available && available <= max_len) {
    return FailErrno(EFAULT, fmt::format("guest string at {:#x} runs off memory", addr));
  }
  return FailErrno(ENAMETOOLONG, fmt::format("guest string at {:#x}", addr));
}

Result<void> GuestMemory::Discard(uint64_t addr, uint64_t len) const {
  FLURRY_TRY(CheckUser(addr, len));
  if (addr % kPageSize != 0 || len % kPageSize != 0) {
    return FailErrno(EINVAL, fmt::format("discarding unaligned range {:#x}+{:#x}", addr, len));
  }
  if (len == 0) return {};
  if (!is_local()) {
    FLURRY_TRY(discard_ ? discard_(addr, len) : RawFill(addr, 0, len));
  } else if (madvise(host_base() + addr, len, MADV_DONTNEED) != 0) {
    return FailErrno(fmt::format("discarding guest range {:#x}+{:#x}", addr, len));
  }
  if (lazy_ != nullptr) lazy_->MarkFresh(addr, len, /*discarded=*/true);
  return {};
}

Result<void> GuestMemory::Materialize() {
  if (lazy_ == nullptr) return {};
  FLURRY_TRY_CTX(lazy_->ResolveAll(), fmt::format("fetching the rest of guest memory from {}",
                                                  lazy_->source_description()));
  final_lazy_stats_ = lazy_->stats();
  lazy_.reset();
  return {};
}

std::optional<LazyStats> GuestMemory::lazy_stats() const {
  if (lazy_ != nullptr) return lazy_->stats();
  return final_lazy_stats_;
}

void GuestMemory::MarkFresh(uint64_t addr, uint64_t len) const {
  if (lazy_ != nullptr) lazy_->MarkFresh(addr, len, /*discarded=*/false);
}

Result<std::vector<bool>> GuestMemory::PopulatedPages() const {
  if (lazy_ != nullptr) return Fail("guest memory is still being fetched on demand");
  const uint64_t pages = size() / kPageSize;
  UniqueFd self;
  int fd = pagemap_.get();
  uint64_t base = 0;  // virtual address of guest address 0 in the owning process
  if (is_local()) {
    self.Reset(open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
    if (!self.valid()) return FailErrno("opening /proc/self/pagemap");
    fd = self.get();
    base = reinterpret_cast<uint64_t>(host_base());
  }
  constexpr uint64_t kPresent = 1ULL << 63, kSwapped = 1ULL << 62;
  constexpr uint64_t kBatch = 4096;
  std::vector<uint64_t> entries(kBatch);
  std::vector<bool> populated(pages, false);
  for (uint64_t page = 0; page < pages;) {
    const uint64_t n = std::min(kBatch, pages - page);
    const off_t offset = static_cast<off_t>((base / kPageSize + page) * sizeof(uint64_t));
    ssize_t got = pread(fd, entries.data(), n * sizeof(uint64_t), offset);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0 || got % sizeof(uint64_t) != 0) return FailErrno("reading the guest's page map");
    const uint64_t count = static_cast<uint64_t>(got) / sizeof(uint64_t);
    for (uint64_t i = 0; i < count; ++i) {
      populated[page + i] = (entries[i] & (kPresent | kSwapped)) != 0;
    }
    page += count;
  }
  return populated;
}

}  // namespace flurry
