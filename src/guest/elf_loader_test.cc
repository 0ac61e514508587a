#include "guest/elf_loader.h"

#include <elf.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "arch/x86_64/layout.h"

namespace flurry {
namespace {

constexpr uint64_t kMiB = 1ULL << 20;

// A synthetic static executable: headers and "code" at `base`, data + bss one page above.
// The file bytes follow a pattern so copies can be checked.
std::vector<uint8_t> MakeElf(uint16_t type, uint64_t base, uint64_t bss_size = 0x2000) {
  std::vector<uint8_t> file(0x1100);
  for (size_t i = 0; i < file.size(); ++i) file[i] = static_cast<uint8_t>(i * 7 + 1);
  Elf64_Ehdr ehdr{};
  std::memcpy(ehdr.e_ident, ELFMAG, SELFMAG);
  ehdr.e_ident[EI_CLASS] = ELFCLASS64;
  ehdr.e_ident[EI_DATA] = ELFDATA2LSB;
  ehdr.e_ident[EI_VERSION] = EV_CURRENT;
  ehdr.e_type = type;
  ehdr.e_machine = EM_X86_64;
  ehdr.e_version = EV_CURRENT;
  ehdr.e_entry = base + 0x100;
  ehdr.e_phoff = sizeof(Elf64_Ehdr);
  ehdr.e_ehsize = sizeof(Elf64_Ehdr);
  ehdr.e_phentsize = sizeof(Elf64_Phdr);
  ehdr.e_phnum = 3;
  Elf64_Phdr ph[3] = {};
  ph[0].p_type = PT_LOAD;
  ph[0].p_flags = PF_R | PF_X;
  ph[0].p_vaddr = base;
  ph[0].p_filesz = ph[0].p_memsz = 0x1000;
  ph[0].p_align = 0x1000;
  ph[1].p_type = PT_LOAD;
  ph[1].p_flags = PF_R | PF_W;
  ph[1].p_offset = 0x1000;
  ph[1].p_vaddr = base + 0x1000;
  ph[1].p_filesz = 0x100;
  ph[1].p_memsz = bss_size;
  ph[1].p_align = 0x1000;
  ph[2].p_type = PT_TLS;
  ph[2].p_flags = PF_R;
  ph[2].p_offset = 0x1000;
  ph[2].p_vaddr = base + 0x1000;
  ph[2].p_filesz = 0x10;
  ph[2].p_memsz = 0x20;
  ph[2].p_align = 8;
  std::memcpy(file.data(), &ehdr, sizeof ehdr);
  std::memcpy(file.data() + sizeof ehdr, ph, sizeof ph);
  return file;
}

Result<LoadedImage> ParseAndLoad(const std::vector<uint8_t>& file, GuestMemory& memory,
                                 uint64_t limit) {
  ElfImage image = FLURRY_TRY(ParseElf(file));
  return LoadElf(image, file, memory, limit);
}

TEST(ElfLoader, LoadsExecutableAtItsAddresses) {
  auto memory = GuestMemory::Create(16 * kMiB).value();
  auto file = MakeElf(ET_EXEC, 0x400000);
  // Garbage where the bss goes: the loader must zero it explicitly.
  std::memset(memory.HostPointer(0x401000, 0x2000), 0xaa, 0x2000);
  auto loaded = ParseAndLoad(file, memory, 8 * kMiB);
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_EQ(loaded->base, 0u);
  EXPECT_EQ(loaded->entry, 0x400100u);
  EXPECT_EQ(loaded->phdr_addr, 0x400040u);
  EXPECT_EQ(loaded->phent, sizeof(Elf64_Phdr));
  EXPECT_EQ(loaded->phnum, 3);
  EXPECT_EQ(loaded->image_start, 0x400000u);
  EXPECT_EQ(loaded->image_end, 0x403000u);
  ASSERT_TRUE(loaded->tls.has_value());
  EXPECT_EQ(loaded->tls->vaddr, 0x401000u);

  EXPECT_EQ(std::memcmp(memory.HostPointer(0x400000, 0x1000), file.data(), 0x1000), 0);
  EXPECT_EQ(std::memcmp(memory.HostPointer(0x401000, 0x100), file.data() + 0x1000, 0x100), 0);
  const uint8_t* bss = memory.HostPointer(0x401100, 0x1f00);
  for (size_t i = 0; i < 0x1f00; ++i) ASSERT_EQ(bss[i], 0) << i;
  // Program headers readable at AT_PHDR.
  Elf64_Phdr ph;
  ASSERT_TRUE(memory.Read(loaded->phdr_addr + sizeof(Elf64_Phdr), &ph, sizeof ph).has_value());
  EXPECT_EQ(ph.p_vaddr, 0x401000u);
  // Each segment's pages with its protection; no PT_GNU_STACK: a non-executable stack.
  ASSERT_EQ(loaded->segment_pages.size(), 2u);
  EXPECT_EQ(loaded->segment_pages[0].start, 0x400000u);
  EXPECT_EQ(loaded->segment_pages[0].length, 0x1000u);
  EXPECT_EQ(loaded->segment_pages[0].prot, PROT_READ | PROT_EXEC);
  EXPECT_EQ(loaded->segment_pages[1].start, 0x401000u);
  EXPECT_EQ(loaded->segment_pages[1].length, 0x2000u);
  EXPECT_EQ(loaded->segment_pages[1].prot, PROT_READ | PROT_WRITE);
  EXPECT_FALSE(loaded->executable_stack);
}

TEST(ElfLoader, PlacesStaticPieAtFourMiB) {
  auto memory = GuestMemory::Create(16 * kMiB).value();
  auto file = MakeElf(ET_DYN, 0);
  auto loaded = ParseAndLoad(file, memory, 8 * kMiB);
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_EQ(loaded->base, kStaticPieBase);
  EXPECT_EQ(loaded->entry, kStaticPieBase + 0x100);
  EXPECT_EQ(loaded->phdr_addr, kStaticPieBase + 0x40);
  EXPECT_EQ(loaded->image_start, kStaticPieBase);
  EXPECT_EQ(loaded->image_end, kStaticPieBase + 0x3000);
  EXPECT_EQ(loaded->tls->vaddr, kStaticPieBase + 0x1000);
  EXPECT_EQ(std::memcmp(memory.HostPointer(kStaticPieBase, 0x1000), file.data(), 0x1000), 0);

  // Linked at a higher address: the bias is "negative" and the image still lands at 4 MiB.
  auto high = MakeElf(ET_DYN, 0x10000000);
  loaded = ParseAndLoad(high, memory, 8 * kMiB);
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_EQ(loaded->image_start, kStaticPieBase);
  EXPECT_EQ(loaded->entry, kStaticPieBase + 0x100);
}

TEST(ElfLoader, KeepsStaticPieAlignment) {
  auto memory = GuestMemory::Create(32 * kMiB).value();
  auto file = MakeElf(ET_DYN, 0);
  auto image = ParseElf(file).value();
  image.max_align = 8 * kMiB;  // as if a segment had p_align 8 MiB
  auto loaded = LoadElf(image, file, memory, 24 * kMiB);
  ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
  EXPECT_EQ(loaded->base, 8 * kMiB);
}

TEST(ElfLoader, RejectsSegmentsOutsideUserMemory) {
  auto memory = GuestMemory::Create(16 * kMiB).value();
  auto low = MakeElf(ET_EXEC, 0x10000);  // in the system area
  auto result = ParseAndLoad(low, memory, 8 * kMiB);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().message(),
            "segment at 0x10000 (size 0x1000) lies outside guest memory (0x200000..0x800000)");

  auto high = MakeElf(ET_EXEC, 0x7f0000000000);
  result = ParseAndLoad(high, memory, 8 * kMiB);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().message(),
            "segment at 0x7f0000000000 (size 0x1000) lies outside "
            "guest memory (0x200000..0x800000)");
  // Nothing was written.
  const uint8_t* user = memory.HostPointer(x86::kUserBase, 14 * kMiB);
  for (uint64_t i = 0; i < 14 * kMiB; i += 4096) ASSERT_EQ(user[i], 0) << i;
}

TEST(ElfLoader, ExplainsProgramsTooBigForMemory) {
  auto memory = GuestMemory::Create(16 * kMiB).value();
  auto big = MakeElf(ET_EXEC, 0x400000, 100 * kMiB);  // 100 MiB of bss
  auto result = ParseAndLoad(big, memory, 8 * kMiB);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().message(),
            "program needs 101 MiB (its image spans 0x400000..0x6801000), more than --mem allows");

  // Just one page too far.
  auto edge = MakeElf(ET_EXEC, 0x400000, 4 * kMiB - 0x1000 + 1);
  result = ParseAndLoad(edge, memory, 8 * kMiB);
  ASSERT_FALSE(result.has_value());
  EXPECT_NE(result.error().message().find("more than --mem allows"), std::string::npos);
  auto fits = MakeElf(ET_EXEC, 0x400000, 4 * kMiB - 0x1000);
  EXPECT_TRUE(ParseAndLoad(fits, memory, 8 * kMiB).has_value());
}

TEST(ElfLoader, RejectsMismatchedFile) {
  auto memory = GuestMemory::Create(16 * kMiB).value();
  auto file = MakeElf(ET_EXEC, 0x400000);
  auto image = ParseElf(file).value();
  std::vector<uint8_t> shorter(file.begin(), file.begin() + 0x1080);
  auto result = LoadElf(image, shorter, memory, 8 * kMiB);
  ASSERT_FALSE(result.has_value());
  EXPECT_EQ(result.error().message().rfind("truncated ELF file: ", 0), 0u);
}

// Random corruption: parse and, when that succeeds, load; never a crash.
TEST(ElfLoader, SurvivesCorruptInput) {
  auto memory = GuestMemory::Create(16 * kMiB).value();
  const auto valid = MakeElf(ET_DYN, 0);
  std::mt19937_64 rng(7);
  for (int iter = 0; iter < 5000; ++iter) {
    auto file = valid;
    for (int k = 0; k < 3; ++k) {
      size_t pos = rng() % (sizeof(Elf64_Ehdr) + 3 * sizeof(Elf64_Phdr));
      file[pos] = static_cast<uint8_t>(rng());
    }
    (void)ParseAndLoad(file, memory, 12 * kMiB);
  }
}

// Real binaries from the system's gcc: a static executable, a static-pie, and two files flurry
// must refuse (a dynamic executable and an object file).
class RealBinaries : public ::testing::Test {
 protected:
  void SetUp() override {
    char dir_template[] = "/tmp/flurry_elf_test_XXXXXX";
    ASSERT_NE(mkdtemp(dir_template), nullptr);
    dir_ = dir_template;
    std::ofstream(dir_ + "/hello.c") << "int counter = 5;\nint zeroed[1000];\n"
                                        "int main(void) { return counter + zeroed[7]; }\n";
  }
  void TearDown() override {
    if (!dir_.empty()) std::system(("rm -rf '" + dir_ + "'").c_str());
  }

  // Compiles hello.c with `flags` into `name`; returns the output's bytes.
  std::vector<uint8_t> Compile(const std::string& flags, const std::string& name) {
    std::string command =
        "/usr/bin/gcc " + flags + " -o '" + dir_ + "/" + name + "' '" + dir_ + "/hello.c'";
    EXPECT_EQ(std::system(command.c_str()), 0) << command;
    std::ifstream in(dir_ + "/" + name, std::ios::binary);
    return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
  }

  // Loads `file` and checks what the process start-up code relies on.
  void CheckLoads(const std::vector<uint8_t>& file, ElfKind kind) {
    auto image = ParseElf(file);
    ASSERT_TRUE(image.has_value()) << image.error().message();
    EXPECT_EQ(image->kind, kind);
    auto memory = GuestMemory::Create(64 * kMiB).value();
    auto loaded = LoadElf(*image, file, memory, 48 * kMiB);
    ASSERT_TRUE(loaded.has_value()) << loaded.error().message();
    if (kind == ElfKind::kStaticPie) {
      EXPECT_EQ(loaded->image_start, kStaticPieBase);
    }
    EXPECT_GE(loaded->image_start, x86::kUserBase);
    EXPECT_LE(loaded->image_end, 48 * kMiB);
    EXPECT_EQ(loaded->image_end % x86::kPageSize, 0u);

    bool entry_in_code = false;
    for (const ElfSegment& seg : image->segments) {
      uint64_t start = seg.vaddr + loaded->base;
      if (loaded->entry >= start && loaded->entry < start + seg.memsz) {
        entry_in_code = (seg.flags & PF_X) != 0;
      }
      EXPECT_EQ(
          std::memcmp(memory.HostPointer(start, seg.filesz), file.data() + seg.offset, seg.filesz),
          0);
    }
    EXPECT_TRUE(entry_in_code);
    // The program headers at AT_PHDR are the file's.
    EXPECT_EQ(std::memcmp(memory.HostPointer(loaded->phdr_addr, loaded->phnum * loaded->phent),
                          file.data() + image->phoff, loaded->phnum * loaded->phent),
              0);
    EXPECT_TRUE(image->tls.has_value());
    ASSERT_TRUE(image->stack_flags.has_value());
    EXPECT_EQ(*image->stack_flags & PF_X, 0u);
  }

  std::string dir_;
};

TEST_F(RealBinaries, LoadsStaticExecutable) {
  CheckLoads(Compile("-static -O1", "static"), ElfKind::kExecutable);
}

TEST_F(RealBinaries, LoadsStaticPie) {
  CheckLoads(Compile("-static-pie -O1", "static-pie"), ElfKind::kStaticPie);
}

TEST_F(RealBinaries, RejectsDynamicExecutables) {
  for (const char* flags : {"-no-pie", "-pie"}) {
    auto image = ParseElf(Compile(flags, "dynamic"));
    ASSERT_FALSE(image.has_value()) << flags;
    EXPECT_EQ(image.error().message(), "dynamically linked executable; link it with -static");
  }
}

TEST_F(RealBinaries, RejectsObjectFiles) {
  auto image = ParseElf(Compile("-c", "hello.o"));
  ASSERT_FALSE(image.has_value());
  EXPECT_EQ(image.error().message(), "not an executable (ELF type 1: relocatable object file)");
}

}  // namespace
}  // namespace flurry
