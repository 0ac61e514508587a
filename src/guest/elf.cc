#include "guest/elf.h"

#include <elf.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <string_view>

#include "arch/x86_64/layout.h"

namespace flurry {
namespace {

// True if [offset, offset+len) lies inside a file of `size` bytes (overflow-safe).
bool InFile(uint64_t offset, uint64_t len, uint64_t size) {
  return offset <= size && len <= size - offset;
}

// Copies a T out of the file at `offset`; the caller has checked the range with InFile.
template <typename T>
T ReadAt(std::span<const uint8_t> file, uint64_t offset) {
  T value;
  std::memcpy(&value, file.data() + offset, sizeof(T));
  return value;
}

std::string_view MachineName(uint16_t machine) {
  switch (machine) {
    case EM_386:
      return " (i386)";
    case EM_ARM:
      return " (32-bit ARM)";
    case EM_AARCH64:
      return " (AArch64)";
    case EM_RISCV:
      return " (RISC-V)";
    case EM_PPC64:
      return " (PowerPC64)";
    case EM_S390:
      return " (s390)";
    default:
      return "";
  }
}

std::string_view TypeName(uint16_t type) {
  switch (type) {
    case ET_NONE:
      return "no file type";
    case ET_REL:
      return "relocatable object file";
    case ET_CORE:
      return "core dump";
    default:
      return "unknown type";
  }
}

std::unexpected<Error> DynamicallyLinked() {
  return Fail("dynamically linked executable; link it with -static");
}

// Validates one PT_LOAD program header (index i) against the file.
Result<void> CheckLoad(const Elf64_Phdr& ph, int i, uint64_t file_size) {
  if (ph.p_filesz > ph.p_memsz) {
    return Fail("ELF segment {} has file size {:#x} larger than its memory size {:#x}", i,
                ph.p_filesz, ph.p_memsz);
  }
  if (ph.p_memsz > kElfMaxSegmentSize) {
    return Fail("ELF segment {} is absurdly large ({:#x} bytes)", i, ph.p_memsz);
  }
  if (ph.p_vaddr > kElfMaxAddress || ph.p_memsz > kElfMaxAddress - ph.p_vaddr) {
    return Fail("ELF segment {} at {:#x} (size {:#x}) lies outside the user address space", i,
                ph.p_vaddr, ph.p_memsz);
  }
  if (!InFile(ph.p_offset, ph.p_filesz, file_size)) {
    return Fail(
        "truncated ELF file: segment {} data at offset {:#x} (size {:#x}) runs past the "
        "end of the file ({:#x} bytes)",
        i, ph.p_offset, ph.p_filesz, file_size);
  }
  if (ph.p_align > 1) {
    if (!std::has_single_bit(ph.p_align)) {
      return Fail("ELF segment {} has alignment {:#x}, which is not a power of two", i, ph.p_align);
    }
    if (ph.p_vaddr % ph.p_align != ph.p_offset % ph.p_align) {
      return Fail(
          "ELF segment {} is misaligned: address {:#x} and file offset {:#x} differ "
          "modulo its alignment {:#x}",
          i, ph.p_vaddr, ph.p_offset, ph.p_align);
    }
  }
  return {};
}

// Validates the PT_TLS program header (index i) and returns its description.
Result<ElfTls> CheckTls(const Elf64_Phdr& ph, int i, uint64_t file_size) {
  if (ph.p_filesz > ph.p_memsz) {
    return Fail("ELF TLS segment {} has file size {:#x} larger than its memory size {:#x}", i,
                ph.p_filesz, ph.p_memsz);
  }
  if (ph.p_memsz > kElfMaxSegmentSize || ph.p_vaddr > kElfMaxAddress ||
      ph.p_memsz > kElfMaxAddress - ph.p_vaddr) {
    return Fail("ELF TLS segment {} at {:#x} (size {:#x}) is absurd", i, ph.p_vaddr, ph.p_memsz);
  }
  if (!InFile(ph.p_offset, ph.p_filesz, file_size)) {
    return Fail(
        "truncated ELF file: TLS segment {} at offset {:#x} (size {:#x}) runs past the "
        "end of the file ({:#x} bytes)",
        i, ph.p_offset, ph.p_filesz, file_size);
  }
  if (ph.p_align > 1 && !std::has_single_bit(ph.p_align)) {
    return Fail("ELF TLS segment {} has alignment {:#x}, which is not a power of two", i,
                ph.p_align);
  }
  return ElfTls{.vaddr = ph.p_vaddr,
                .memsz = ph.p_memsz,
                .offset = ph.p_offset,
                .filesz = ph.p_filesz,
                .align = ph.p_align};
}

// True if the dynamic section [offset, offset+size) (already checked against the file) names a
// shared library it needs (DT_NEEDED).
bool NeedsLibraries(std::span<const uint8_t> file, uint64_t offset, uint64_t size) {
  uint64_t count = size / sizeof(Elf64_Dyn);
  for (uint64_t k = 0; k < count; ++k) {
    auto dyn = ReadAt<Elf64_Dyn>(file, offset + k * sizeof(Elf64_Dyn));
    if (dyn.d_tag == DT_NULL) break;
    if (dyn.d_tag == DT_NEEDED) return true;
  }
  return false;
}

// Checks the ELF identification bytes and the header fields that decide whether flurry can run
// the file at all; returns the header.
Result<Elf64_Ehdr> CheckHeader(std::span<const uint8_t> file) {
  if (file.size() < SELFMAG || std::memcmp(file.data(), ELFMAG, SELFMAG) != 0) {
    return Fail("not an ELF file");
  }
  if (file.size() < EI_NIDENT) {
    return Fail("truncated ELF file: {} bytes, shorter than the ELF identification", file.size());
  }
  uint8_t elf_class = file[EI_CLASS];
  if (elf_class == ELFCLASS32) {
    return Fail("32-bit ELF is not supported; flurry runs x86-64 programs");
  }
  if (elf_class != ELFCLASS64) return Fail("ELF has unknown class {}", elf_class);
  uint8_t data = file[EI_DATA];
  if (data == ELFDATA2MSB) {
    return Fail("big-endian ELF is not supported; flurry runs x86-64 programs");
  }
  if (data != ELFDATA2LSB) return Fail("ELF has unknown data encoding {}", data);
  if (file.size() < sizeof(Elf64_Ehdr)) {
    return Fail("truncated ELF file: {} bytes, shorter than the {}-byte ELF header", file.size(),
                sizeof(Elf64_Ehdr));
  }
  auto ehdr = ReadAt<Elf64_Ehdr>(file, 0);
  if (ehdr.e_machine != EM_X86_64) {
    return Fail("ELF is for machine {}{}, not x86-64", ehdr.e_machine, MachineName(ehdr.e_machine));
  }
  if (ehdr.e_type != ET_EXEC && ehdr.e_type != ET_DYN) {
    return Fail("not an executable (ELF type {}: {})", ehdr.e_type, TypeName(ehdr.e_type));
  }
  if (ehdr.e_phnum == 0) return Fail("not an executable: ELF has no program headers");
  if (ehdr.e_phnum > kElfMaxProgramHeaders) {
    return Fail("ELF has too many program headers ({}, at most {})", ehdr.e_phnum,
                kElfMaxProgramHeaders);
  }
  if (ehdr.e_phentsize != sizeof(Elf64_Phdr)) {
    return Fail("ELF program header size is {} bytes, expected {}", ehdr.e_phentsize,
                sizeof(Elf64_Phdr));
  }
  uint64_t table_size = uint64_t{ehdr.e_phnum} * sizeof(Elf64_Phdr);
  if (!InFile(ehdr.e_phoff, table_size, file.size())) {
    return Fail(
        "truncated ELF file: program headers at offset {:#x} ({} bytes) run past the end "
        "of the file ({:#x} bytes)",
        ehdr.e_phoff, table_size, file.size());
  }
  return ehdr;
}

// Checks the sorted PT_LOAD segments for overlap and fills in the image bounds.
Result<void> CheckLayout(ElfImage& image) {
  auto& segs = image.segments;
  if (segs.empty()) return Fail("not an executable: ELF has no loadable segments");
  std::sort(segs.begin(), segs.end(),
            [](const ElfSegment& a, const ElfSegment& b) { return a.vaddr < b.vaddr; });
  // Adjacent segments may share a page (the linker packs them that way); only their byte
  // ranges must be disjoint.
  for (size_t k = 1; k < segs.size(); ++k) {
    const ElfSegment& prev = segs[k - 1];
    if (prev.vaddr + prev.memsz > segs[k].vaddr) {
      return Fail("ELF segments overlap: {:#x} (size {:#x}) and {:#x} (size {:#x})", prev.vaddr,
                  prev.memsz, segs[k].vaddr, segs[k].memsz);
    }
  }
  image.min_vaddr = x86::AlignDown(segs.front().vaddr, x86::kPageSize);
  // Sorted and disjoint, so the last segment ends highest. Below kElfMaxAddress: no overflow.
  image.max_vaddr = x86::AlignUp(segs.back().vaddr + segs.back().memsz, x86::kPageSize);

  auto contains = [&](uint64_t addr) {
    return std::any_of(segs.begin(), segs.end(), [&](const ElfSegment& s) {
      return addr >= s.vaddr && addr - s.vaddr < s.memsz;
    });
  };
  if (!contains(image.entry)) {
    return Fail("ELF entry point {:#x} is outside every loadable segment", image.entry);
  }

  // The program headers must be loaded too: the C library finds them through AT_PHDR.
  uint64_t table_size = uint64_t{image.phnum} * image.phentsize;
  auto holder = std::find_if(segs.begin(), segs.end(), [&](const ElfSegment& s) {
    return image.phoff >= s.offset && image.phoff - s.offset <= s.filesz &&
           table_size <= s.filesz - (image.phoff - s.offset);
  });
  if (holder == segs.end()) {
    return Fail("ELF program headers (file offset {:#x}) are not inside any loadable segment",
                image.phoff);
  }
  image.phdr_vaddr = holder->vaddr + (image.phoff - holder->offset);
  return {};
}

}  // namespace

Result<ElfImage> ParseElf(std::span<const uint8_t> file) {
  Elf64_Ehdr ehdr = FLURRY_TRY(CheckHeader(file));

  ElfImage image;
  image.kind = ehdr.e_type == ET_EXEC ? ElfKind::kExecutable : ElfKind::kStaticPie;
  image.entry = ehdr.e_entry;
  image.phoff = ehdr.e_phoff;
  image.phentsize = ehdr.e_phentsize;
  image.phnum = ehdr.e_phnum;
  image.max_align = x86::kPageSize;

  bool has_interp = false;
  std::optional<Elf64_Phdr> dynamic;
  for (int i = 0; i < ehdr.e_phnum; ++i) {
    auto ph = ReadAt<Elf64_Phdr>(file, ehdr.e_phoff + uint64_t(i) * sizeof(Elf64_Phdr));
    switch (ph.p_type) {
      case PT_LOAD:
        FLURRY_TRY(CheckLoad(ph, i, file.size()));
        if (ph.p_memsz == 0) break;  // loads nothing
        image.segments.push_back(ElfSegment{.vaddr = ph.p_vaddr,
                                            .memsz = ph.p_memsz,
                                            .offset = ph.p_offset,
                                            .filesz = ph.p_filesz,
                                            .flags = ph.p_flags});
        image.max_align = std::max<uint64_t>(image.max_align, ph.p_align);
        break;
      case PT_TLS:
        if (image.tls) return Fail("ELF has more than one TLS segment");
        image.tls = FLURRY_TRY(CheckTls(ph, i, file.size()));
        break;
      case PT_INTERP:
        has_interp = true;
        break;
      case PT_DYNAMIC:
        if (!InFile(ph.p_offset, ph.p_filesz, file.size())) {
          return Fail(
              "truncated ELF file: dynamic section at offset {:#x} (size {:#x}) runs "
              "past the end of the file ({:#x} bytes)",
              ph.p_offset, ph.p_filesz, file.size());
        }
        dynamic = ph;
        break;
      case PT_GNU_STACK:
        image.stack_flags = ph.p_flags;
        break;
      default:
        break;
    }
  }
  if (has_interp) return DynamicallyLinked();
  if (dynamic && NeedsLibraries(file, dynamic->p_offset, dynamic->p_filesz)) {
    return DynamicallyLinked();
  }
  FLURRY_TRY(CheckLayout(image));
  return image;
}

}  // namespace flurry
