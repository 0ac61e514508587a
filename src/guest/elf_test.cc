#include "guest/elf.h"

#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace flurry {
namespace {

// Builds synthetic ELF files: by default a valid static executable with a read/exec segment
// holding the headers and code at 0x400000 and a data+bss segment at 0x401000.
struct ElfBuilder {
  Elf64_Ehdr ehdr{};
  std::vector<Elf64_Phdr> phdrs;
  std::vector<uint8_t> file;  // the file body; Build() writes the headers over it

  ElfBuilder() {
    std::memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
    ehdr.e_ident[EI_CLASS] = ELFCLASS64;
    ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
    ehdr.e_ident[EI_VERSION] = EV_CURRENT;
    ehdr.e_type = ET_EXEC;
    ehdr.e_machine = EM_X86_64;
    ehdr.e_version = EV_CURRENT;
    ehdr.e_entry = 0x400100;
    ehdr.e_phoff = sizeof(Elf64_Ehdr);
    ehdr.e_ehsize = sizeof(Elf64_Ehdr);
    ehdr.e_phentsize = sizeof(Elf64_Phdr);
    phdrs.push_back(Load(0x400000, 0, 0x1000, 0x1000, PF_R | PF_X));
    phdrs.push_back(Load(0x401000, 0x1000, 0x100, 0x2000, PF_R | PF_W));
    phdrs.push_back(Phdr(PT_GNU_STACK, 0, 0, 0, 0, PF_R | PF_W));
    file.resize(0x1100);
    for (size_t i = 0; i < file.size(); ++i) file[i] = static_cast<uint8_t>(i * 7 + 1);
  }

  static Elf64_Phdr Phdr(uint32_t type, uint64_t vaddr, uint64_t offset, uint64_t filesz,
                         uint64_t memsz, uint32_t flags, uint64_t align = 0x1000) {
    Elf64_Phdr ph{};
    ph.p_type = type;
    ph.p_flags = flags;
    ph.p_offset = offset;
    ph.p_vaddr = vaddr;
    ph.p_paddr = vaddr;
    ph.p_filesz = filesz;
    ph.p_memsz = memsz;
    ph.p_align = align;
    return ph;
  }
  static Elf64_Phdr Load(uint64_t vaddr, uint64_t offset, uint64_t filesz, uint64_t memsz,
                         uint32_t flags) {
    return Phdr(PT_LOAD, vaddr, offset, filesz, memsz, flags);
  }

  std::vector<uint8_t> Build() const {
    std::vector<uint8_t> out = file;
    Elf64_Ehdr header = ehdr;
    header.e_phnum = static_cast<uint16_t>(phdrs.size());
    if (out.size() < sizeof header) out.resize(sizeof header);
    std::memcpy(out.data(), &header, sizeof header);
    uint64_t end = ehdr.e_phoff + phdrs.size() * sizeof(Elf64_Phdr);
    if (out.size() < end) out.resize(end);
    if (!phdrs.empty()) {
      std::memcpy(out.data() + ehdr.e_phoff, phdrs.data(), phdrs.size() * sizeof(Elf64_Phdr));
    }
    return out;
  }
};

std::string ParseError(const std::vector<uint8_t>& file) {
  auto image = ParseElf(file);
  if (image) return "(parsed)";
  return image.error().message();
}

std::string ParseError(const ElfBuilder& b) { return ParseError(b.Build()); }

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

TEST(Elf, ParsesStaticExecutable) {
  ElfBuilder b;
  auto image = ParseElf(b.Build());
  ASSERT_TRUE(image.has_value()) << image.error().message();
  EXPECT_EQ(image->kind, ElfKind::kExecutable);
  EXPECT_EQ(image->entry, 0x400100u);
  EXPECT_EQ(image->phoff, sizeof(Elf64_Ehdr));
  EXPECT_EQ(image->phentsize, sizeof(Elf64_Phdr));
  EXPECT_EQ(image->phnum, 3);
  EXPECT_EQ(image->phdr_vaddr, 0x400040u);
  ASSERT_EQ(image->segments.size(), 2u);
  EXPECT_EQ(image->segments[0].vaddr, 0x400000u);
  EXPECT_EQ(image->segments[0].flags, uint32_t{PF_R | PF_X});
  EXPECT_EQ(image->segments[1].vaddr, 0x401000u);
  EXPECT_EQ(image->segments[1].offset, 0x1000u);
  EXPECT_EQ(image->segments[1].filesz, 0x100u);
  EXPECT_EQ(image->segments[1].memsz, 0x2000u);
  EXPECT_EQ(image->min_vaddr, 0x400000u);
  EXPECT_EQ(image->max_vaddr, 0x403000u);
  EXPECT_EQ(image->max_align, 0x1000u);
  ASSERT_TRUE(image->stack_flags.has_value());
  EXPECT_EQ(*image->stack_flags, uint32_t{PF_R | PF_W});
  EXPECT_FALSE(image->tls.has_value());
}

TEST(Elf, SortsSegmentsAndRoundsBounds) {
  ElfBuilder b;
  std::swap(b.phdrs[0], b.phdrs[1]);
  b.phdrs[1].p_filesz = 0x1000 - 0x20;  // still contains the entry point and headers
  b.phdrs[1].p_memsz = 0x1000 - 0x20;
  b.phdrs[0].p_memsz = 0x1234;
  b.phdrs.pop_back();  // no PT_GNU_STACK
  auto image = ParseElf(b.Build());
  ASSERT_TRUE(image.has_value()) << image.error().message();
  EXPECT_EQ(image->segments[0].vaddr, 0x400000u);
  EXPECT_EQ(image->max_vaddr, 0x403000u);
  EXPECT_FALSE(image->stack_flags.has_value());
}

TEST(Elf, RecordsTls) {
  ElfBuilder b;
  b.phdrs.push_back(ElfBuilder::Phdr(PT_TLS, 0x401000, 0x1000, 0x10, 0x40, PF_R, 8));
  auto image = ParseElf(b.Build());
  ASSERT_TRUE(image.has_value()) << image.error().message();
  ASSERT_TRUE(image->tls.has_value());
  EXPECT_EQ(image->tls->vaddr, 0x401000u);
  EXPECT_EQ(image->tls->filesz, 0x10u);
  EXPECT_EQ(image->tls->memsz, 0x40u);
  EXPECT_EQ(image->tls->align, 8u);

  b.phdrs.push_back(b.phdrs.back());
  EXPECT_EQ(ParseError(b), "ELF has more than one TLS segment");
  b.phdrs.pop_back();
  b.phdrs.back().p_filesz = 0x80;
  EXPECT_TRUE(StartsWith(ParseError(b), "ELF TLS segment 3 has file size")) << ParseError(b);
  b.phdrs.back().p_filesz = 0x10;
  b.phdrs.back().p_offset = 0x10000;
  EXPECT_TRUE(StartsWith(ParseError(b), "truncated ELF file: TLS")) << ParseError(b);
}

TEST(Elf, RejectsNonElf) {
  EXPECT_EQ(ParseError(std::vector<uint8_t>{}), "not an ELF file");
  EXPECT_EQ(ParseError(std::vector<uint8_t>{0x7f, 'E', 'L'}), "not an ELF file");
  std::string script = "#!/bin/sh\necho hello\n";
  EXPECT_EQ(ParseError(std::vector<uint8_t>(script.begin(), script.end())), "not an ELF file");
  ElfBuilder b;
  b.ehdr.e_ident[EI_MAG3] = 'G';
  EXPECT_EQ(ParseError(b), "not an ELF file");
}

TEST(Elf, RejectsTruncatedFiles) {
  auto file = ElfBuilder().Build();
  for (size_t size : {size_t{4}, size_t{15}, size_t{16}, size_t{63}, size_t{64}, size_t{100},
                      size_t{0x1000}, size_t{0x10ff}}) {
    std::vector<uint8_t> cut(file.begin(), file.begin() + size);
    EXPECT_TRUE(StartsWith(ParseError(cut), "truncated ELF file: "))
        << size << ": " << ParseError(cut);
  }
  ElfBuilder b;
  b.phdrs[1].p_offset = ~0ULL - 0x10 + 1;  // offset + filesz wraps around
  b.phdrs[1].p_align = 0;
  EXPECT_TRUE(StartsWith(ParseError(b), "truncated ELF file: segment 1")) << ParseError(b);

  // Program headers beyond the end of the file (patched in after building).
  auto bytes = ElfBuilder().Build();
  for (uint64_t phoff : {uint64_t{0x100000}, uint64_t{~0ULL - 8}}) {
    Elf64_Ehdr ehdr;
    std::memcpy(&ehdr, bytes.data(), sizeof ehdr);
    ehdr.e_phoff = phoff;
    std::memcpy(bytes.data(), &ehdr, sizeof ehdr);
    EXPECT_TRUE(StartsWith(ParseError(bytes), "truncated ELF file: program headers"))
        << ParseError(bytes);
  }
}

TEST(Elf, RejectsOtherArchitectures) {
  ElfBuilder b;
  b.ehdr.e_ident[EI_CLASS] = ELFCLASS32;
  EXPECT_EQ(ParseError(b), "32-bit ELF is not supported; flurry runs x86-64 programs");
  // A real 32-bit header is shorter than a 64-bit one: still the 32-bit message.
  auto small = b.Build();
  small.resize(52);
  EXPECT_EQ(ParseError(small), "32-bit ELF is not supported; flurry runs x86-64 programs");

  b = ElfBuilder();
  b.ehdr.e_ident[EI_CLASS] = 7;
  EXPECT_EQ(ParseError(b), "ELF has unknown class 7");

  b = ElfBuilder();
  b.ehdr.e_ident[EI_DATA] = ELFDATA2MSB;
  EXPECT_EQ(ParseError(b), "big-endian ELF is not supported; flurry runs x86-64 programs");

  b = ElfBuilder();
  b.ehdr.e_machine = EM_AARCH64;
  EXPECT_EQ(ParseError(b), "ELF is for machine 183 (AArch64), not x86-64");
  b.ehdr.e_machine = 0x1234;
  EXPECT_EQ(ParseError(b), "ELF is for machine 4660, not x86-64");
}

TEST(Elf, RejectsNonExecutables) {
  ElfBuilder b;
  b.ehdr.e_type = ET_REL;
  EXPECT_EQ(ParseError(b), "not an executable (ELF type 1: relocatable object file)");
  b.ehdr.e_type = ET_CORE;
  EXPECT_EQ(ParseError(b), "not an executable (ELF type 4: core dump)");
  b.ehdr.e_type = 0x77;
  EXPECT_TRUE(StartsWith(ParseError(b), "not an executable")) << ParseError(b);
}

TEST(Elf, RejectsDynamicallyLinked) {
  const std::string kDynamic = "dynamically linked executable; link it with -static";
  ElfBuilder b;
  b.phdrs.push_back(ElfBuilder::Phdr(PT_INTERP, 0x400200, 0x200, 0x1c, 0x1c, PF_R, 1));
  EXPECT_EQ(ParseError(b), kDynamic);

  // ET_DYN with a dynamic section: a static-pie unless it names a needed library.
  ElfBuilder pie;
  pie.ehdr.e_type = ET_DYN;
  pie.phdrs.push_back(ElfBuilder::Phdr(PT_DYNAMIC, 0x401000, 0x1000, 0x40, 0x40, PF_R, 8));
  Elf64_Dyn dyn[4] = {{DT_RELA, {0x400300}}, {DT_RELASZ, {0}}, {DT_NULL, {0}}, {DT_NEEDED, {1}}};
  std::memcpy(pie.file.data() + 0x1000, dyn, sizeof dyn);
  auto image = ParseElf(pie.Build());
  ASSERT_TRUE(image.has_value()) << image.error().message();
  EXPECT_EQ(image->kind, ElfKind::kStaticPie);

  dyn[1].d_tag = DT_NEEDED;
  std::memcpy(pie.file.data() + 0x1000, dyn, sizeof dyn);
  EXPECT_EQ(ParseError(pie), kDynamic);

  pie.phdrs.back().p_offset = 0x1100 - 0x20;  // dynamic section past the end of the file
  EXPECT_TRUE(StartsWith(ParseError(pie), "truncated ELF file: dynamic")) << ParseError(pie);
}

TEST(Elf, RejectsBadProgramHeaderTables) {
  ElfBuilder b;
  b.phdrs.clear();
  EXPECT_EQ(ParseError(b), "not an executable: ELF has no program headers");

  b = ElfBuilder();
  b.phdrs.resize(257, ElfBuilder::Phdr(PT_NULL, 0, 0, 0, 0, 0));
  EXPECT_EQ(ParseError(b), "ELF has too many program headers (257, at most 256)");
  b.phdrs.assign(256, ElfBuilder::Phdr(PT_NULL, 0, 0, 0, 0, 0));
  b.file.resize(0x5000);
  b.phdrs.back() = ElfBuilder::Load(0x400000, 0, 0x5000, 0x5000, PF_R | PF_X);
  EXPECT_EQ(ParseError(b), "(parsed)");

  b = ElfBuilder();
  b.ehdr.e_phentsize = 32;
  EXPECT_EQ(ParseError(b), "ELF program header size is 32 bytes, expected 56");

  b = ElfBuilder();
  b.phdrs = {ElfBuilder::Phdr(PT_GNU_STACK, 0, 0, 0, 0, PF_R | PF_W)};
  EXPECT_EQ(ParseError(b), "not an executable: ELF has no loadable segments");
  b.phdrs.push_back(ElfBuilder::Load(0x400000, 0, 0, 0, PF_R));  // empty: loads nothing
  EXPECT_EQ(ParseError(b), "not an executable: ELF has no loadable segments");
}

TEST(Elf, RejectsBadSegments) {
  ElfBuilder b;
  b.phdrs[1].p_filesz = 0x3000;
  EXPECT_EQ(ParseError(b), "ELF segment 1 has file size 0x3000 larger than its memory size 0x2000");

  b = ElfBuilder();
  b.phdrs[1].p_memsz = (64ULL << 30) + 1;
  EXPECT_EQ(ParseError(b), "ELF segment 1 is absurdly large (0x1000000001 bytes)");

  b = ElfBuilder();
  b.phdrs[1].p_vaddr = ~0ULL - 0xfff;  // vaddr + memsz overflows
  b.phdrs[1].p_align = 0;
  EXPECT_TRUE(StartsWith(ParseError(b),
                         "ELF segment 1 at 0xfffffffffffff000 (size 0x2000) lies "
                         "outside the user address space"))
      << ParseError(b);

  b = ElfBuilder();
  b.phdrs[1].p_vaddr = 0x400800;  // inside segment 0, congruent modulo 0x800
  b.phdrs[1].p_align = 0x800;
  EXPECT_EQ(ParseError(b),
            "ELF segments overlap: 0x400000 (size 0x1000) and 0x400800 (size 0x2000)");

  b = ElfBuilder();
  b.phdrs[1].p_vaddr = 0x401200;
  EXPECT_EQ(ParseError(b),
            "ELF segment 1 is misaligned: address 0x401200 and file offset 0x1000 "
            "differ modulo its alignment 0x1000");
  b.phdrs[1].p_align = 0x200;  // congruent at this alignment
  EXPECT_EQ(ParseError(b), "(parsed)");
  b.phdrs[1].p_align = 0x300;
  EXPECT_EQ(ParseError(b), "ELF segment 1 has alignment 0x300, which is not a power of two");
  b.phdrs[1].p_align = 1;  // no constraint
  EXPECT_EQ(ParseError(b), "(parsed)");
}

TEST(Elf, AcceptsSegmentsSharingAPage) {
  // Like gcc -static output: the data segment starts in the page where the previous one ends.
  ElfBuilder b;
  b.phdrs[0].p_filesz = 0x518;
  b.phdrs[0].p_memsz = 0x518;
  b.phdrs[1].p_vaddr = 0x400518 + 0x1000 - 0x518;  // 0x401000: touching
  auto image = ParseElf(b.Build());
  ASSERT_TRUE(image.has_value()) << image.error().message();

  b.phdrs[1] = ElfBuilder::Load(0x400600, 0x600, 0x100, 0x200, PF_R | PF_W);  // same page
  image = ParseElf(b.Build());
  ASSERT_TRUE(image.has_value()) << image.error().message();
  EXPECT_EQ(image->min_vaddr, 0x400000u);
  EXPECT_EQ(image->max_vaddr, 0x401000u);

  b.phdrs[1].p_vaddr = 0x400517;  // one byte of true overlap
  b.phdrs[1].p_offset = 0x517;
  EXPECT_TRUE(StartsWith(ParseError(b), "ELF segments overlap")) << ParseError(b);
}

TEST(Elf, RejectsEntryOutsideSegments) {
  ElfBuilder b;
  b.ehdr.e_entry = 0x403000;
  EXPECT_EQ(ParseError(b), "ELF entry point 0x403000 is outside every loadable segment");
}

TEST(Elf, RejectsUnloadedProgramHeaders) {
  ElfBuilder b;
  b.ehdr.e_phoff = 0x1100;  // after the last file-backed byte of any segment
  EXPECT_EQ(ParseError(b),
            "ELF program headers (file offset 0x1100) are not inside any loadable segment");
  b.ehdr.e_phoff = 0x1000 + 0x100 - sizeof(Elf64_Phdr);  // straddles the end of segment 1
  EXPECT_TRUE(StartsWith(ParseError(b), "ELF program headers")) << ParseError(b);
  b.ehdr.e_phoff = 0x1010;  // wholly inside segment 1's file bytes
  b.phdrs[1].p_filesz = 0x200;
  b.file.resize(0x1200);
  auto image = ParseElf(b.Build());
  ASSERT_TRUE(image.has_value()) << image.error().message();
  EXPECT_EQ(image->phdr_vaddr, 0x401010u);
}

// Random corruption of a valid file must give an error or an image, never a crash.
TEST(Elf, SurvivesCorruptInput) {
  ElfBuilder b;
  b.phdrs.push_back(ElfBuilder::Phdr(PT_TLS, 0x401000, 0x1000, 0x10, 0x40, PF_R, 8));
  b.phdrs.push_back(ElfBuilder::Phdr(PT_DYNAMIC, 0x401000, 0x1000, 0x40, 0x40, PF_R, 8));
  const auto valid = b.Build();
  std::mt19937_64 rng(42);
  int parsed = 0;
  for (int iter = 0; iter < 20000; ++iter) {
    auto file = valid;
    int flips = 1 + static_cast<int>(rng() % 4);
    for (int k = 0; k < flips; ++k) {
      size_t pos = rng() % (sizeof(Elf64_Ehdr) + 5 * sizeof(Elf64_Phdr));
      file[pos] = static_cast<uint8_t>(rng() % 3 == 0 ? 0xff : rng());
    }
    if (rng() % 8 == 0) file.resize(rng() % file.size());
    auto image = ParseElf(file);
    if (image) {
      ++parsed;
      for (const ElfSegment& s : image->segments) {
        EXPECT_LE(s.filesz, s.memsz);
        EXPECT_LE(s.offset + s.filesz, file.size());
      }
    }
  }
  EXPECT_GT(parsed, 0);
}

}  // namespace
}  // namespace flurry
