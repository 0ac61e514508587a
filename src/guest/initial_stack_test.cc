#include "guest/initial_stack.h"

#include <elf.h>
#include <gtest/gtest.h>

#include <cstring>
#include <map>
#include <string>
#include <vector>

namespace flurry {
namespace {

constexpr uint64_t kTop = 0x10000000;
constexpr uint64_t kMaxSize = 1 << 20;

StackInputs SampleInputs() {
  StackInputs in;
  in.argv = {"/bin/prog", "-x", "hello world"};
  in.envp = {"A=1", "PATH=/usr/bin:/bin", ""};
  in.execfn = "/bin/prog";
  for (int i = 0; i < 16; ++i) in.random[i] = static_cast<uint8_t>(0xa0 + i);
  in.phdr = 0x400040;
  in.phent = 56;
  in.phnum = 10;
  in.entry = 0x401bc0;
  in.hwcap = 0x178bfbff;
  in.hwcap2 = 2;
  in.minsigstksz = 3632;
  return in;
}

// Reads a built stack back the way a C library's start-up code does.
class StackReader {
 public:
  StackReader(const InitialStack& stack, uint64_t top) : stack_(stack), top_(top) {}

  bool Contains(uint64_t addr, uint64_t len) const {
    return addr >= stack_.bottom && addr <= top_ && len <= top_ - addr;
  }
  uint64_t Word(uint64_t addr) const {
    EXPECT_TRUE(Contains(addr, 8)) << std::hex << addr;
    if (!Contains(addr, 8)) return 0;
    uint64_t value;
    std::memcpy(&value, stack_.bytes.data() + (addr - stack_.bottom), 8);
    return value;
  }
  std::string String(uint64_t addr) const {
    EXPECT_TRUE(Contains(addr, 1)) << std::hex << addr;
    std::string s;
    while (Contains(addr, 1) && stack_.bytes[addr - stack_.bottom] != 0) {
      s.push_back(static_cast<char>(stack_.bytes[addr - stack_.bottom]));
      ++addr;
    }
    EXPECT_TRUE(Contains(addr, 1)) << "unterminated string";
    return s;
  }

 private:
  const InitialStack& stack_;
  uint64_t top_;
};

// What the stack says, decoded from RSP upwards.
struct Decoded {
  std::vector<std::string> argv;
  std::vector<std::string> envp;
  std::vector<std::pair<uint64_t, uint64_t>> auxv;  // in order, AT_NULL excluded
  std::map<uint64_t, uint64_t> aux;
};

Decoded Decode(const InitialStack& stack, uint64_t top) {
  StackReader r(stack, top);
  Decoded d;
  uint64_t p = stack.rsp;
  uint64_t argc = r.Word(p);
  p += 8;
  for (uint64_t i = 0; i < argc; ++i, p += 8) d.argv.push_back(r.String(r.Word(p)));
  EXPECT_EQ(r.Word(p), 0u) << "argv is not NULL-terminated";
  p += 8;
  for (uint64_t ptr; (ptr = r.Word(p)) != 0; p += 8) d.envp.push_back(r.String(ptr));
  p += 8;
  for (int i = 0; i < 100; ++i, p += 16) {
    uint64_t key = r.Word(p);
    if (key == AT_NULL) break;
    d.auxv.emplace_back(key, r.Word(p + 8));
    EXPECT_TRUE(d.aux.emplace(key, r.Word(p + 8)).second) << "duplicate auxv key " << key;
  }
  return d;
}

TEST(InitialStack, BuildsLinuxLayout) {
  StackInputs in = SampleInputs();
  auto stack = BuildInitialStack(in, kTop, kMaxSize);
  ASSERT_TRUE(stack.has_value()) << stack.error().message();
  EXPECT_EQ(stack->rsp % 16, 0u);
  EXPECT_EQ(stack->bottom, stack->rsp);
  EXPECT_EQ(stack->bottom + stack->bytes.size(), kTop);
  uint64_t end_marker;
  std::memcpy(&end_marker, stack->bytes.data() + stack->bytes.size() - 8, 8);
  EXPECT_EQ(end_marker, 0u);

  Decoded d = Decode(*stack, kTop);
  EXPECT_EQ(d.argv, in.argv);
  EXPECT_EQ(d.envp, in.envp);
  const std::map<uint64_t, uint64_t> expected_fixed = {
      {AT_PHDR, 0x400040},    {AT_PHENT, 56}, {AT_PHNUM, 10},       {AT_PAGESZ, 4096},
      {AT_BASE, 0},           {AT_FLAGS, 0},  {AT_ENTRY, 0x401bc0}, {AT_UID, 0},
      {AT_EUID, 0},           {AT_GID, 0},    {AT_EGID, 0},         {AT_SECURE, 0},
      {AT_HWCAP, 0x178bfbff}, {AT_HWCAP2, 2}, {AT_CLKTCK, 100},     {AT_MINSIGSTKSZ, 3632},
  };
  for (const auto& [key, value] : expected_fixed) {
    ASSERT_TRUE(d.aux.contains(key)) << "missing auxv key " << key;
    EXPECT_EQ(d.aux[key], value) << "auxv key " << key;
  }
  EXPECT_FALSE(d.aux.contains(AT_SYSINFO_EHDR));
  // Every key: the fixed ones plus AT_RANDOM, AT_EXECFN and AT_PLATFORM.
  EXPECT_EQ(d.aux.size(), expected_fixed.size() + 3);

  StackReader r(*stack, kTop);
  ASSERT_TRUE(d.aux.contains(AT_RANDOM));
  ASSERT_TRUE(r.Contains(d.aux[AT_RANDOM], 16));
  EXPECT_EQ(
      std::memcmp(stack->bytes.data() + (d.aux[AT_RANDOM] - stack->bottom), in.random.data(), 16),
      0);
  EXPECT_EQ(r.String(d.aux[AT_EXECFN]), "/bin/prog");
  EXPECT_EQ(r.String(d.aux[AT_PLATFORM]), "x86_64");
  // The random bytes, strings and table do not overlap: the table ends below AT_RANDOM.
  uint64_t table_end = stack->rsp + 8 * (1 + 4 + 4 + 2 * (d.auxv.size() + 1));
  EXPECT_LE(table_end, d.aux[AT_RANDOM]);
}

TEST(InitialStack, AddsVdsoOnlyWhenPresent) {
  StackInputs in = SampleInputs();
  in.vdso_base = 0xb000;
  auto stack = BuildInitialStack(in, kTop, kMaxSize);
  ASSERT_TRUE(stack.has_value()) << stack.error().message();
  Decoded d = Decode(*stack, kTop);
  ASSERT_TRUE(d.aux.contains(AT_SYSINFO_EHDR));
  EXPECT_EQ(d.aux[AT_SYSINFO_EHDR], 0xb000u);
  EXPECT_EQ(d.auxv.front().first, uint64_t{AT_SYSINFO_EHDR});
  EXPECT_EQ(stack->rsp % 16, 0u);
}

TEST(InitialStack, HandlesEmptyArgvAndEnvp) {
  StackInputs in = SampleInputs();
  in.argv.clear();
  in.envp.clear();
  in.execfn.clear();
  auto stack = BuildInitialStack(in, kTop, kMaxSize);
  ASSERT_TRUE(stack.has_value()) << stack.error().message();
  StackReader r(*stack, kTop);
  EXPECT_EQ(r.Word(stack->rsp), 0u);       // argc
  EXPECT_EQ(r.Word(stack->rsp + 8), 0u);   // argv NULL
  EXPECT_EQ(r.Word(stack->rsp + 16), 0u);  // envp NULL
  Decoded d = Decode(*stack, kTop);
  EXPECT_TRUE(d.argv.empty());
  EXPECT_TRUE(d.envp.empty());
  EXPECT_EQ(r.String(d.aux[AT_EXECFN]), "");
}

TEST(InitialStack, AlignsRspForEveryShape) {
  for (int argc = 0; argc < 6; ++argc) {
    for (int envc = 0; envc < 4; ++envc) {
      for (uint64_t vdso : {uint64_t{0}, uint64_t{0xb000}}) {
        StackInputs in = SampleInputs();
        in.argv.assign(argc, std::string(argc * 3 + 1, 'a'));
        in.envp.assign(envc, "K=" + std::string(envc, 'v'));
        in.vdso_base = vdso;
        auto stack = BuildInitialStack(in, kTop, kMaxSize);
        ASSERT_TRUE(stack.has_value()) << stack.error().message();
        EXPECT_EQ(stack->rsp % 16, 0u) << argc << " " << envc << " " << vdso;
        Decoded d = Decode(*stack, kTop);
        EXPECT_EQ(d.argv, in.argv);
        EXPECT_EQ(d.envp, in.envp);
      }
    }
  }
}

TEST(InitialStack, RejectsOversizedInputs) {
  const std::string kTooLarge = "arguments and environment too large for the stack";
  StackInputs in = SampleInputs();
  in.envp.assign(1000, std::string(4096, 'x'));
  auto stack = BuildInitialStack(in, kTop, kMaxSize);
  ASSERT_FALSE(stack.has_value());
  EXPECT_EQ(stack.error().message(), kTooLarge);

  in = SampleInputs();
  in.argv.assign(200000, "");  // tiny strings, but the pointers do not fit
  stack = BuildInitialStack(in, kTop, kMaxSize);
  ASSERT_FALSE(stack.has_value());
  EXPECT_EQ(stack.error().message(), kTooLarge);

  in = SampleInputs();
  for (uint64_t max : {uint64_t{0}, uint64_t{7}, uint64_t{64}, uint64_t{300}}) {
    stack = BuildInitialStack(in, kTop, max);
    ASSERT_FALSE(stack.has_value()) << max;
    EXPECT_EQ(stack.error().message(), kTooLarge);
  }
  // A stack top too close to address 0 for the contents.
  stack = BuildInitialStack(in, 0x100, kMaxSize);
  ASSERT_FALSE(stack.has_value());
  EXPECT_EQ(stack.error().message(), kTooLarge);

  // Exactly the size it needs is enough.
  auto fits = BuildInitialStack(in, kTop, kMaxSize).value();
  EXPECT_TRUE(BuildInitialStack(in, kTop, fits.bytes.size()).has_value());
  EXPECT_FALSE(BuildInitialStack(in, kTop, fits.bytes.size() - 1).has_value());
}

TEST(InitialStack, RejectsBadInputs) {
  StackInputs in = SampleInputs();
  EXPECT_EQ(BuildInitialStack(in, kTop + 8, kMaxSize).error().message(),
            "stack top 0x10000008 is not 16-byte aligned");
  in.argv[1] = std::string("a\0b", 3);
  EXPECT_EQ(BuildInitialStack(in, kTop, kMaxSize).error().message(),
            "argument 1 contains a NUL byte");
}

TEST(InitialStack, PlacesIntoGuestMemory) {
  auto memory = GuestMemory::Create(16 << 20).value();
  uint64_t top = memory.size();
  auto stack = BuildInitialStack(SampleInputs(), top, kMaxSize).value();
  auto rsp = PlaceInitialStack(stack, memory);
  ASSERT_TRUE(rsp.has_value()) << rsp.error().message();
  EXPECT_EQ(*rsp, stack.rsp);
  uint64_t argc = 0, argv0 = 0;
  ASSERT_TRUE(memory.Read(*rsp, &argc, 8).has_value());
  ASSERT_TRUE(memory.Read(*rsp + 8, &argv0, 8).has_value());
  EXPECT_EQ(argc, 3u);
  EXPECT_EQ(memory.ReadCString(argv0, 100).value(), "/bin/prog");

  // A stack that would run past the end of guest memory is an error, not a crash.
  auto outside = BuildInitialStack(SampleInputs(), top + 0x1000, kMaxSize).value();
  EXPECT_FALSE(PlaceInitialStack(outside, memory).has_value());
}

}  // namespace
}  // namespace flurry
