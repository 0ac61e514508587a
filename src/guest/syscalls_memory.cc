// Memory syscalls: brk, mmap, munmap, mremap, madvise, mprotect.
//
// Guest memory is identity mapped, so these calls maintain the MemoryMap — what is mapped, with
// which protection — and give memory back to the host: every range that leaves the map is
// discarded (MADV_DONTNEED), which keeps the invariant "memory outside any mapping reads as
// zero" that fresh mmap and brk rely on. The protections they change reach the backend (page
// tables, or the stub's own mprotect) before the guest runs again; see docs/design.md
// ("Memory protection").
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "arch/x86_64/layout.h"
#include "guest/syscall.h"

namespace flurry {
namespace {

using x86::AlignUp;
using x86::kPageSize;

void DiscardRanges(GuestMemory& memory, const std::vector<std::pair<uint64_t, uint64_t>>& ranges) {
  for (const auto& [start, length] : ranges) (void)memory.Discard(start, length);
}

// Copies a file's bytes from `offset` into `target` (a private file mapping); bytes past the end
// of the file stay zero. Returns 0 or an errno.
int ReadFileInto(const FdTable& fds, int fd, const GuestMemory& memory, uint64_t address,
                 uint64_t length, uint64_t offset) {
  auto file = fds.Get(fd);
  if (!file) return EBADF;
  if ((*file)->kind != FileKind::kRegular) return EACCES;
  // In bounded pieces: remote memory goes through a bounce buffer.
  constexpr uint64_t kPiece = 8 << 20;
  for (uint64_t base = 0; base < length; base += kPiece) {
    const uint64_t piece = std::min(kPiece, length - base);
    // The kernel's own filling of a new mapping: whatever its protection.
    auto window = memory.Window(address + base, piece, GuestAccess::kAsKernel);
    if (!window) return EFAULT;
    std::span<uint8_t> target = window->bytes();
    uint64_t done = 0;
    while (done < piece) {
      ssize_t n = pread((*file)->host_fd(), target.data() + done, piece - done,
                        static_cast<off_t>(offset + base + done));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) return errno;
      if (n == 0) break;
      done += static_cast<uint64_t>(n);
    }
    if (!window->Store(done)) return EFAULT;
    if (done < piece) break;  // the rest of the mapping, past the end of the file, stays zero
  }
  return 0;
}

SyscallResult SysBrk(SyscallContext& c, const SyscallArgs& a) {
  uint64_t released_start, released_len;
  const uint64_t old_brk = c.state.memory_map.brk();
  uint64_t brk = c.state.memory_map.SetBrk(a.arg[0], &released_start, &released_len);
  if (released_len != 0) (void)c.memory.Discard(released_start, released_len);
  if (brk > old_brk) {
    // Fresh heap: zero, never fetched when memory comes on demand.
    const uint64_t from = AlignUp(old_brk, kPageSize);
    if (AlignUp(brk, kPageSize) > from) c.memory.MarkFresh(from, AlignUp(brk, kPageSize) - from);
  }
  return SyscallResult::Return(static_cast<int64_t>(brk));
}

SyscallResult SysMmap(SyscallContext& c, const SyscallArgs& a) {
  const uint64_t hint = a.arg[0], length = a.arg[1];
  const auto prot = static_cast<uint8_t>(a.arg[2] & kProtAll);
  const int flags = static_cast<int>(a.arg[3]);
  const int fd = static_cast<int>(a.arg[4]);
  const uint64_t offset = a.arg[5];
  if (length == 0 || offset % kPageSize != 0) return SyscallResult::Errno(EINVAL);
  const uint64_t aligned = AlignUp(length, kPageSize);
  if (aligned < length) return SyscallResult::Errno(ENOMEM);
  const int type = flags & MAP_TYPE;
  if (type != MAP_PRIVATE && type != MAP_SHARED && type != MAP_SHARED_VALIDATE) {
    return SyscallResult::Errno(EINVAL);
  }
  if (!(flags & MAP_ANONYMOUS)) {
    // File mappings: a private copy of the file's bytes (shared file mappings are not supported).
    if (type != MAP_PRIVATE) return SyscallResult::Errno(ENODEV);
    if (fd < 0) return SyscallResult::Errno(EBADF);
  }
  const bool fixed = (flags & (MAP_FIXED | MAP_FIXED_NOREPLACE)) != 0;
  if ((flags & MAP_FIXED_NOREPLACE) && !(flags & MAP_FIXED) && hint % kPageSize == 0 &&
      c.state.memory_map.Overlaps(hint, aligned)) {
    return SyscallResult::Errno(EEXIST);
  }
  if (fixed) {
    // MAP_FIXED replaces what was there with fresh (zero) pages.
    auto removed = c.state.memory_map.Unmap(hint, aligned);
    DiscardRanges(c.memory, removed);
  }
  auto address = c.state.memory_map.Map(hint, aligned, fixed, prot);
  if (!address) return ErrnoFrom(address.error());
  if (flags & MAP_ANONYMOUS) c.memory.MarkFresh(*address, aligned);
  if (!(flags & MAP_ANONYMOUS)) {
    int err = ReadFileInto(c.state.fds, fd, c.memory, *address, length, offset);
    if (err != 0) {
      DiscardRanges(c.memory, c.state.memory_map.Unmap(*address, aligned));
      return SyscallResult::Errno(err);
    }
  }
  return SyscallResult::Return(static_cast<int64_t>(*address));
}

SyscallResult SysMunmap(SyscallContext& c, const SyscallArgs& a) {
  const uint64_t address = a.arg[0], length = a.arg[1];
  if (address % kPageSize != 0 || length == 0) return SyscallResult::Errno(EINVAL);
  const uint64_t aligned = AlignUp(length, kPageSize);
  if (aligned < length || address + aligned < address) return SyscallResult::Errno(EINVAL);
  DiscardRanges(c.memory, c.state.memory_map.Unmap(address, aligned));
  return SyscallResult::Return(0);
}

SyscallResult SysMremap(SyscallContext& c, const SyscallArgs& a) {
  const uint64_t old_address = a.arg[0], old_length = a.arg[1], new_length = a.arg[2];
  const uint64_t flags = a.arg[3];
  if (flags & ~static_cast<uint64_t>(MREMAP_MAYMOVE)) return SyscallResult::Errno(EINVAL);
  if (AlignUp(new_length, kPageSize) < new_length) return SyscallResult::Errno(ENOMEM);
  auto result =
      c.state.memory_map.Remap(old_address, old_length, new_length, (flags & MREMAP_MAYMOVE) != 0);
  if (!result) return ErrnoFrom(result.error());
  const uint64_t old_aligned = AlignUp(old_length, kPageSize);
  if (*result != old_address) {
    if (!c.memory.Copy(*result, old_address, old_aligned)) return SyscallResult::Errno(EFAULT);
    DiscardRanges(c.memory, c.state.memory_map.Unmap(old_address, old_aligned));
  } else if (AlignUp(new_length, kPageSize) < old_aligned) {
    const uint64_t kept = AlignUp(new_length, kPageSize);
    (void)c.memory.Discard(old_address + kept, old_aligned - kept);
  }
  return SyscallResult::Return(static_cast<int64_t>(*result));
}

SyscallResult SysMadvise(SyscallContext& c, const SyscallArgs& a) {
  const uint64_t address = a.arg[0], length = a.arg[1];
  const int advice = static_cast<int>(a.arg[2]);
  if (address % kPageSize != 0) return SyscallResult::Errno(EINVAL);
  const uint64_t aligned = AlignUp(length, kPageSize);
  if (aligned < length) return SyscallResult::Errno(EINVAL);
  if (advice == MADV_DONTNEED || advice == MADV_FREE) {
    if (!c.state.memory_map.IsMapped(address, aligned)) return SyscallResult::Errno(ENOMEM);
    (void)c.memory.Discard(address, aligned);
  }
  return SyscallResult::Return(0);
}

SyscallResult SysMprotect(SyscallContext& c, const SyscallArgs& a) {
  const uint64_t address = a.arg[0], length = a.arg[1], prot = a.arg[2];
  constexpr uint64_t kProtSem = 0x8;  // PROT_SEM (accepted, no meaning on x86)
  constexpr uint64_t kKnown = kProtAll | kProtSem | PROT_GROWSDOWN | PROT_GROWSUP;
  if (address % kPageSize != 0 || (prot & ~kKnown) != 0 ||
      (prot & (PROT_GROWSDOWN | PROT_GROWSUP)) == (PROT_GROWSDOWN | PROT_GROWSUP)) {
    return SyscallResult::Errno(EINVAL);
  }
  const uint64_t aligned = AlignUp(length, kPageSize);
  if (aligned < length || address + aligned < address) return SyscallResult::Errno(ENOMEM);
  if (aligned == 0) return SyscallResult::Return(0);
  auto done = c.state.memory_map.Protect(address, aligned, static_cast<uint8_t>(prot & kProtAll));
  if (!done) return ErrnoFrom(done.error());
  return SyscallResult::Return(0);
}

SyscallResult SysAccepted(SyscallContext&, const SyscallArgs&) { return SyscallResult::Return(0); }

}  // namespace

void RegisterMemorySyscalls(SyscallTable& table) {
  table.Register(SYS_brk, SysBrk);
  table.Register(SYS_mmap, SysMmap);
  table.Register(SYS_munmap, SysMunmap);
  table.Register(SYS_mremap, SysMremap);
  table.Register(SYS_madvise, SysMadvise);
  table.Register(SYS_mprotect, SysMprotect);
  table.Register(SYS_msync, SysAccepted);
  table.Register(SYS_mlock, SysAccepted);
  table.Register(SYS_munlock, SysAccepted);
  table.Register(SYS_mlockall, SysAccepted);
  table.Register(SYS_munlockall, SysAccepted);
}

}  // namespace flurry
