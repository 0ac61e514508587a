// Loading a parsed ELF executable into guest memory.
//
// Guest virtual == guest physical, so loading is copying: each PT_LOAD segment's file bytes go
// to its (biased) address in guest RAM and the rest of the segment is zeroed. The whole image
// must fit in user memory below the area the VMM reserves for mmap and the stack.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/error.h"
#include "guest/elf.h"
#include "memory/guest_memory.h"

namespace flurry {

// Where a static-pie's lowest page is placed (like a non-PIE executable's usual 0x400000).
inline constexpr uint64_t kStaticPieBase = 0x400000;

// The program as loaded: the guest addresses the initial stack's auxv and the memory map need.
struct LoadedImage {
  uint64_t base = 0;          // load bias added to every link-time address (0 for ET_EXEC)
  uint64_t entry = 0;         // biased entry point (AT_ENTRY, initial RIP)
  uint64_t phdr_addr = 0;     // guest address of the program header table (AT_PHDR)
  uint16_t phent = 0;         // AT_PHENT
  uint16_t phnum = 0;         // AT_PHNUM
  uint64_t image_start = 0;   // lowest page of the image (page aligned)
  uint64_t image_end = 0;     // end of the highest segment, page aligned up; the brk starts here
  std::optional<ElfTls> tls;  // PT_TLS with vaddr biased
  // Each PT_LOAD segment's pages with the protection its p_flags give (PROT_*), in program
  // header order: where two segments share a page, the later one's protection wins, as when
  // Linux maps them one after the other.
  struct Pages {
    uint64_t start = 0;
    uint64_t length = 0;
    uint8_t prot = 0;
  };
  std::vector<Pages> segment_pages;
  bool executable_stack = false;  // PT_GNU_STACK with PF_X
};

// Where `image` goes and whether it fits: every segment must lie inside [kUserBase,
// load_limit). Nothing is copied.
Result<LoadedImage> PlaceElf(const ElfImage& image, uint64_t file_size, uint64_t load_limit);
// Copies `image` (parsed from `file`) into `memory` where PlaceElf puts it; load_limit must not
// exceed memory.size().
Result<LoadedImage> LoadElf(const ElfImage& image, std::span<const uint8_t> file,
                            GuestMemory& memory, uint64_t load_limit);

}  // namespace flurry
