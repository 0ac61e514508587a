#include "guest/elf_loader.h"

#include <elf.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "arch/x86_64/layout.h"
#include "base/check.h"

namespace flurry {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;

// The load bias for `image`: 0 for ET_EXEC; for a static-pie, the bias that puts its lowest page
// at kStaticPieBase, rounded up to the segments' alignment. Unsigned arithmetic wraps, so an
// image linked above kStaticPieBase gets a "negative" bias.
uint64_t LoadBias(const ElfImage& image) {
  if (image.kind == ElfKind::kExecutable) return 0;
  return x86::AlignUp(kStaticPieBase - image.min_vaddr, image.max_align);
}

// Checks that segment `seg`, placed at `start`, lies in [kUserBase, limit); the error says
// whether more guest memory would help.
Result<void> CheckFits(const ElfSegment& seg, uint64_t start, uint64_t image_start,
                       uint64_t image_end, uint64_t limit) {
  if (start >= x86::kUserBase && start <= limit && seg.memsz <= limit - start) return {};
  bool placed_sanely = start >= x86::kUserBase && image_start >= x86::kUserBase &&
                       image_start < image_end && image_end <= x86::kMaxRamSize;
  if (placed_sanely) {
    uint64_t size_mib = (image_end - image_start + kMiB - 1) / kMiB;
    return Fail("program needs {} MiB (its image spans {:#x}..{:#x}), more than --mem allows",
                size_mib, image_start, image_end);
  }
  return Fail("segment at {:#x} (size {:#x}) lies outside guest memory ({:#x}..{:#x})", start,
              seg.memsz, x86::kUserBase, limit);
}

}  // namespace

Result<LoadedImage> PlaceElf(const ElfImage& image, uint64_t file_size, uint64_t load_limit) {
  uint64_t bias = LoadBias(image);
  LoadedImage loaded{.base = bias,
                     .entry = image.entry + bias,
                     .phdr_addr = image.phdr_vaddr + bias,
                     .phent = image.phentsize,
                     .phnum = image.phnum,
                     .image_start = image.min_vaddr + bias,
                     .image_end = image.max_vaddr + bias,
                     .tls = image.tls,
                     .segment_pages = {},
                     .executable_stack = false};
  if (loaded.tls) loaded.tls->vaddr += bias;

  // Check every segment before copying any, so a failed load leaves memory untouched.
  for (const ElfSegment& seg : image.segments) {
    FLURRY_TRY(CheckFits(seg, seg.vaddr + bias, loaded.image_start, loaded.image_end, load_limit));
    if (seg.offset > file_size || seg.filesz > file_size - seg.offset) {
      return Fail(
          "truncated ELF file: segment data at offset {:#x} (size {:#x}) runs past the "
          "end of the file ({:#x} bytes)",
          seg.offset, seg.filesz, file_size);
    }
  }
  // The segments fit, so their page-aligned hull does too, unless load_limit is not page
  // aligned; the brk must start inside memory either way.
  if (loaded.image_end > load_limit) {
    return Fail("program image ends at {:#x}, past the end of its memory ({:#x})", loaded.image_end,
                load_limit);
  }
  loaded.executable_stack = image.stack_flags && (*image.stack_flags & PF_X) != 0;
  for (const ElfSegment& seg : image.segments) {
    const uint64_t start = x86::AlignDown(seg.vaddr + bias, x86::kPageSize);
    const uint64_t end = x86::AlignUp(seg.vaddr + bias + seg.memsz, x86::kPageSize);
    const uint8_t prot = ((seg.flags & PF_R) ? PROT_READ : 0) |
                         ((seg.flags & PF_W) ? PROT_WRITE : 0) |
                         ((seg.flags & PF_X) ? PROT_EXEC : 0);
    if (end > start) loaded.segment_pages.push_back({start, end - start, prot});
  }
  return loaded;
}

Result<LoadedImage> LoadElf(const ElfImage& image, std::span<const uint8_t> file,
                            GuestMemory& memory, uint64_t load_limit) {
  FLURRY_CHECK(load_limit <= memory.size());
  LoadedImage loaded = FLURRY_TRY(PlaceElf(image, file.size(), load_limit));
  const uint64_t bias = loaded.base;

  for (const ElfSegment& seg : image.segments) {
    const uint64_t dst = seg.vaddr + bias;
    FLURRY_TRY(memory.WritePhysical(dst, file.data() + seg.offset, seg.filesz));
    // The tail (.bss) must read as zero: the bytes up to its first page boundary are written,
    // whole pages after it are discarded (zero without being touched).
    const uint64_t bss = dst + seg.filesz, bss_end = dst + seg.memsz;
    const uint64_t first_page_end = std::min<uint64_t>(x86::AlignUp(bss, x86::kPageSize), bss_end);
    const std::vector<uint8_t> zeros(first_page_end - bss, 0);
    FLURRY_TRY(memory.WritePhysical(bss, zeros.data(), zeros.size()));
    const uint64_t whole_end = x86::AlignDown(bss_end, x86::kPageSize);
    if (whole_end > first_page_end) {
      FLURRY_TRY(memory.Discard(first_page_end, whole_end - first_page_end));
    }
    if (bss_end > whole_end && whole_end >= first_page_end) {
      const std::vector<uint8_t> last(bss_end - whole_end, 0);
      FLURRY_TRY(memory.WritePhysical(whole_end, last.data(), last.size()));
    }
  }
  return loaded;
}

}  // namespace flurry
