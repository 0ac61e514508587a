// ELF parsing and validation for the one program flurry runs: a statically linked x86-64 Linux
// executable (ET_EXEC, or a static-pie ET_DYN without an interpreter).
//
// ParseElf is pure: it reads only the file bytes it is given, treats them as untrusted, and
// either returns an ElfImage describing what to load or an error with a one-line message meant
// for the user ("dynamically linked executable; link it with -static"). Every offset and size
// read from the file is checked against the file size and for overflow before it is used.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/error.h"

namespace flurry {

// Limits on what flurry accepts; anything beyond is rejected as malformed.
inline constexpr uint16_t kElfMaxProgramHeaders = 256;
inline constexpr uint64_t kElfMaxSegmentSize = 64ULL << 30;  // no guest has more RAM than this
// Highest address (exclusive) of a user mapping on x86-64 with 4-level paging.
inline constexpr uint64_t kElfMaxAddress = 1ULL << 47;

enum class ElfKind {
  kExecutable,  // ET_EXEC: loaded at its link-time addresses
  kStaticPie,   // ET_DYN without PT_INTERP or DT_NEEDED: relocates itself, loaded anywhere
};

// One PT_LOAD segment: file bytes [offset, offset+filesz) appear at [vaddr, vaddr+filesz),
// followed by zeroes up to vaddr+memsz. Addresses are link-time (not yet biased).
struct ElfSegment {
  uint64_t vaddr = 0;
  uint64_t memsz = 0;
  uint64_t offset = 0;
  uint64_t filesz = 0;
  uint32_t flags = 0;  // PF_R | PF_W | PF_X
};

// The PT_TLS template: the initial image of each thread's static TLS block.
struct ElfTls {
  uint64_t vaddr = 0;
  uint64_t memsz = 0;
  uint64_t offset = 0;
  uint64_t filesz = 0;
  uint64_t align = 0;
};

// What ParseElf learned about a valid executable. All addresses are link-time addresses.
struct ElfImage {
  ElfKind kind = ElfKind::kExecutable;
  uint64_t entry = 0;
  // The program header table as it is in the file (e_phoff, e_phentsize, e_phnum).
  uint64_t phoff = 0;
  uint16_t phentsize = 0;
  uint16_t phnum = 0;
  // Where the program header table appears in memory: inside the PT_LOAD segment whose file
  // range contains it (what Linux reports as AT_PHDR, before biasing).
  uint64_t phdr_vaddr = 0;
  std::vector<ElfSegment> segments;  // PT_LOAD segments with memsz > 0, sorted by vaddr
  std::optional<ElfTls> tls;         // PT_TLS, if present
  // p_flags of PT_GNU_STACK; nullopt when absent (x86-64 Linux since 5.8 then gives a
  // non-executable stack, as with PT_GNU_STACK without PF_X).
  std::optional<uint32_t> stack_flags;
  // Page-aligned bounds of the loadable segments: [min_vaddr, max_vaddr).
  uint64_t min_vaddr = 0;
  uint64_t max_vaddr = 0;
  // Largest p_align of the PT_LOAD segments (at least the page size); a load bias for a
  // static-pie must be a multiple of it.
  uint64_t max_align = 0;
};

// Parses and validates `file` as a static x86-64 Linux executable.
Result<ElfImage> ParseElf(std::span<const uint8_t> file);

}  // namespace flurry
