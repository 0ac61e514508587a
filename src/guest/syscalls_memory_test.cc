#include <gtest/gtest.h>
#include <sys/mman.h>

#include "guest/syscalls_test_support.h"

namespace flurry {
namespace {

using testing::SyscallHarness;

TEST(SysBrk, QueriesGrowsAndRefuses) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_brk, 0), 5 << 20);
  EXPECT_EQ(h.Call(SYS_brk, (5 << 20) + 0x21000), (5 << 20) + 0x21000);
  EXPECT_EQ(h.Call(SYS_brk, 60ULL << 20), (5 << 20) + 0x21000);  // into the mmap area: refused
}

TEST(SysBrk, ShrinkZeroesReleasedMemory) {
  SyscallHarness h;
  uint64_t base = h.Call(SYS_brk, 0);
  h.Call(SYS_brk, base + 0x2000);
  ASSERT_TRUE(h.memory.WriteObject<uint32_t>(base + 0x1000, 0xabcd).has_value());
  h.Call(SYS_brk, base);
  h.Call(SYS_brk, base + 0x2000);
  EXPECT_EQ(h.memory.ReadObject<uint32_t>(base + 0x1000).value(), 0u);
}

TEST(SysMmap, AnonymousMappingsAreZeroedAndDistinct) {
  SyscallHarness h;
  int64_t a =
      h.Call(SYS_mmap, 0, 10000, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  int64_t b = h.Call(SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_GT(a, 0);
  ASSERT_GT(b, 0);
  EXPECT_EQ(a % 4096, 0);
  EXPECT_LE(b + 4096, a);
  ASSERT_TRUE(h.memory.WriteObject<uint64_t>(a, 7).has_value());
  EXPECT_EQ(h.Call(SYS_munmap, a, 10000), 0);
  int64_t c = h.Call(SYS_mmap, 0, 12288, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT_EQ(c, a);                                          // the hole is reused ...
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(c).value(), 0u);  // ... and reads as zero
}

TEST(SysMmap, RejectsBadArguments) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_mmap, 0, 0, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), -EINVAL);
  EXPECT_EQ(h.Call(SYS_mmap, 0, 4096, PROT_READ, MAP_ANONYMOUS, -1, 0), -EINVAL);  // no type
  EXPECT_EQ(h.Call(SYS_mmap, 0, ~0ULL, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0), -ENOMEM);
  EXPECT_EQ(h.Call(SYS_mmap, 0, 1ULL << 40, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
            -ENOMEM);
  EXPECT_EQ(h.Call(SYS_mmap, 0, 4096, PROT_READ, MAP_PRIVATE, 77, 0), -EBADF);  // file, bad fd
  EXPECT_EQ(h.Call(SYS_munmap, 4097, 4096), -EINVAL);
  EXPECT_EQ(h.Call(SYS_munmap, 4096, 0), -EINVAL);
}

TEST(SysMmap, FixedNoReplaceRefusesOverlap) {
  SyscallHarness h;
  int64_t a = h.Call(SYS_mmap, 0, 8192, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT_EQ(h.Call(SYS_mmap, a, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                   -1, 0),
            -EEXIST);
  EXPECT_EQ(
      h.Call(SYS_mmap, a + 4096, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED, -1, 0),
      a + 4096);
}

TEST(SysMremap, MovesDataWhenItCannotGrow) {
  SyscallHarness h;
  int64_t a = h.Call(SYS_mmap, 0, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_TRUE(h.memory.WriteObject<uint64_t>(a + 8, 0x5555).has_value());
  EXPECT_EQ(h.Call(SYS_mremap, a, 4096, 1 << 20, 0), -ENOMEM);
  int64_t b = h.Call(SYS_mremap, a, 4096, 1 << 20, MREMAP_MAYMOVE);
  ASSERT_GT(b, 0);
  EXPECT_NE(b, a);
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(b + 8).value(), 0x5555u);
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(a + 8).value(), 0u);  // old range discarded
  EXPECT_EQ(h.Call(SYS_mremap, 0x10000, 4096, 8192, MREMAP_MAYMOVE), -EFAULT);
}

TEST(SysMprotectAndMadvise, CheckTheRange) {
  SyscallHarness h;
  int64_t a = h.Call(SYS_mmap, 0, 8192, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  EXPECT_EQ(h.Call(SYS_mprotect, a, 8192, PROT_READ), 0);
  EXPECT_EQ(h.Call(SYS_mprotect, a + 1, 4096, PROT_READ), -EINVAL);
  EXPECT_EQ(h.Call(SYS_mprotect, 20ULL << 20, 4096, PROT_READ), -ENOMEM);
  EXPECT_EQ(h.Call(SYS_mprotect, a, 4096, PROT_READ | PROT_GROWSDOWN | PROT_GROWSUP), -EINVAL);
  EXPECT_EQ(h.Call(SYS_mprotect, a, 4096, 0x100), -EINVAL);
  EXPECT_EQ(h.Call(SYS_mprotect, a, 0, PROT_READ), 0);
  ASSERT_TRUE(h.memory.WriteObject<uint64_t>(a, 9).has_value());
  EXPECT_EQ(h.Call(SYS_madvise, a, 8192, MADV_DONTNEED), 0);
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(a).value(), 0u);
}

TEST(SysMprotect, RecordsProtectionsForTheBackend) {
  SyscallHarness h;
  (void)h.state.memory_map.TakeProtectionChanges();
  int64_t a = h.Call(SYS_mmap, 0, 3 * 4096, PROT_READ | PROT_WRITE | PROT_EXEC,
                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  ASSERT_GT(a, 0);
  EXPECT_EQ(h.Call(SYS_mprotect, a + 4096, 4096, PROT_NONE), 0);
  const ProtectionMap& prot = h.state.memory_map.protections();
  EXPECT_EQ(prot.At(a), PROT_READ | PROT_WRITE | PROT_EXEC);
  EXPECT_EQ(prot.At(a + 4096), PROT_NONE);
  EXPECT_EQ(h.state.memory_map.TakeProtectionChanges(),
            (std::vector<std::pair<uint64_t, uint64_t>>{{a, 3 * 4096}, {a + 4096, 4096}}));
  EXPECT_EQ(h.Call(SYS_munmap, a, 3 * 4096), 0);
  EXPECT_FALSE(prot.At(a + 4096));
}

TEST(SysMmap, FixedNoReplaceSeesTheHeapAndStackToo) {
  SyscallHarness h;
  const uint64_t brk = h.Call(SYS_brk, 0);
  EXPECT_EQ(h.Call(SYS_mmap, brk - 4096, 4096, PROT_READ,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0),
            -EEXIST);
}

}  // namespace
}  // namespace flurry
