#include "guest/memory_map.h"

#include <gtest/gtest.h>

namespace flurry {
namespace {

constexpr uint64_t kMiB = 1 << 20;

MemoryMap MakeMap() {
  // image [4 MiB, 5 MiB), mmap area up to 100 MiB, guard, stack [102 MiB, 128 MiB)
  return MemoryMap(4 * kMiB, 5 * kMiB, 100 * kMiB, 102 * kMiB, 128 * kMiB);
}

TEST(MemoryMap, BrkGrowsAndShrinks) {
  MemoryMap map = MakeMap();
  uint64_t rs, rl;
  EXPECT_EQ(map.brk(), 5 * kMiB);
  EXPECT_EQ(map.SetBrk(5 * kMiB + 100, &rs, &rl), 5 * kMiB + 100);
  EXPECT_EQ(rl, 0u);
  EXPECT_EQ(map.SetBrk(7 * kMiB, &rs, &rl), 7 * kMiB);
  EXPECT_EQ(map.SetBrk(6 * kMiB, &rs, &rl), 6 * kMiB);
  EXPECT_EQ(rs, 6 * kMiB);
  EXPECT_EQ(rl, kMiB);
  EXPECT_EQ(map.SetBrk(kMiB, &rs, &rl), 6 * kMiB);  // below the start: refused
}

TEST(MemoryMap, BrkStopsAtMmapRegions) {
  MemoryMap map = MakeMap();
  uint64_t rs, rl;
  auto a = map.Map(0, 4096, false, kProtReadWrite).value();
  EXPECT_EQ(a, 100 * kMiB - 4096);
  EXPECT_EQ(map.SetBrk(a + 1, &rs, &rl), 5 * kMiB);  // refused: old break
  EXPECT_EQ(map.SetBrk(a, &rs, &rl), a);
}

TEST(MemoryMap, MapsTopDownAndReusesHoles) {
  MemoryMap map = MakeMap();
  uint64_t a = map.Map(0, 8192, false, kProtReadWrite).value();
  uint64_t b = map.Map(0, 4096, false, kProtReadWrite).value();
  EXPECT_EQ(a, 100 * kMiB - 8192);
  EXPECT_EQ(b, a - 4096);
  auto removed = map.Unmap(a, 8192);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(map.Map(0, 4096, false, kProtReadWrite).value(), 100 * kMiB - 4096);
  EXPECT_TRUE(map.IsMapped(b, 4096));
  EXPECT_FALSE(map.IsMapped(a, 4096));
}

TEST(MemoryMap, PartialUnmapSplitsRegions) {
  MemoryMap map = MakeMap();
  uint64_t a = map.Map(0, 4 * 4096, false, kProtReadWrite).value();
  auto removed = map.Unmap(a + 4096, 4096);
  ASSERT_EQ(removed.size(), 1u);
  EXPECT_EQ(removed[0].first, a + 4096);
  EXPECT_TRUE(map.IsMapped(a, 4096));
  EXPECT_FALSE(map.IsMapped(a + 4096, 4096));
  EXPECT_TRUE(map.IsMapped(a + 8192, 8192));
  EXPECT_EQ(map.regions().size(), 2u);
}

TEST(MemoryMap, ExhaustionIsEnomem) {
  MemoryMap map = MakeMap();
  auto r = map.Map(0, 200 * kMiB, false, kProtReadWrite);
  ASSERT_FALSE(r.has_value());
  EXPECT_EQ(r.error().code(), ENOMEM);
  EXPECT_EQ(map.Map(0, 0, false, kProtReadWrite).error().code(), EINVAL);
}

TEST(MemoryMap, FixedReplaces) {
  MemoryMap map = MakeMap();
  uint64_t a = map.Map(0, 4 * 4096, false, kProtReadWrite).value();
  EXPECT_EQ(map.Map(a + 4096, 4096, true, kProtReadWrite).value(), a + 4096);
  EXPECT_TRUE(map.IsMapped(a, 4 * 4096));
  EXPECT_FALSE(map.Map(4096, 4096, true, kProtReadWrite).has_value());           // system area
  EXPECT_FALSE(map.Map(101 * kMiB, 4096, true, kProtReadWrite).has_value());     // guard
  EXPECT_EQ(map.Map(a + 1, 4096, true, kProtReadWrite).error().code(), EINVAL);  // unaligned
}

TEST(MemoryMap, RemapGrowsInPlaceOrMoves) {
  MemoryMap map = MakeMap();
  uint64_t a = map.Map(0, 4096, false, kProtReadWrite).value();  // at the top: cannot grow up
  uint64_t moved = map.Remap(a, 4096, 8192, true).value();
  EXPECT_NE(moved, a);
  EXPECT_EQ(map.Remap(a, 4096, 8192, false).error().code(), ENOMEM);
  map.Unmap(a, 4096);
  // The moved region is the topmost now; shrink in place.
  EXPECT_EQ(map.Remap(moved, 8192, 4096, false).value(), moved);
  EXPECT_FALSE(map.IsMapped(moved + 4096, 4096));
  EXPECT_EQ(map.Remap(moved, 4096, 8192, false).value(), moved);  // free above now: grows
  EXPECT_EQ(map.Remap(12345 * 4096, 4096, 8192, true).error().code(), EFAULT);
}

TEST(MemoryMap, ProtectionsFollowEveryChange) {
  MemoryMap map = MakeMap();
  const ProtectionMap& prot = map.protections();
  EXPECT_EQ(prot.At(4 * kMiB), kProtReadWrite);    // image (until the loader refines it)
  EXPECT_EQ(prot.At(127 * kMiB), kProtReadWrite);  // stack
  EXPECT_FALSE(prot.At(5 * kMiB));                 // nothing above the break yet
  EXPECT_FALSE(prot.At(101 * kMiB));               // guard
  (void)map.TakeProtectionChanges();

  uint64_t rs, rl;
  map.SetBrk(5 * kMiB + 3 * 4096, &rs, &rl);
  EXPECT_EQ(prot.At(5 * kMiB + 2 * 4096), kProtReadWrite);
  EXPECT_FALSE(prot.At(5 * kMiB + 3 * 4096));
  map.SetBrk(5 * kMiB + 4096, &rs, &rl);
  EXPECT_FALSE(prot.At(5 * kMiB + 4096));
  EXPECT_EQ(map.TakeProtectionChanges(), (std::vector<std::pair<uint64_t, uint64_t>>{
                                             {5 * kMiB, 3 * 4096}, {5 * kMiB + 4096, 2 * 4096}}));

  const uint64_t a = map.Map(0, 4 * 4096, false, kProtRead | kProtExec).value();
  EXPECT_EQ(prot.At(a + 3 * 4096), kProtRead | kProtExec);
  ASSERT_TRUE(map.Protect(a + 4096, 4096, 0).has_value());
  EXPECT_EQ(prot.At(a + 4096), 0);
  EXPECT_TRUE(map.IsMapped(a, 4 * 4096));  // PROT_NONE pages are mapped
  // mprotect of a range with a hole fails, after changing what precedes the hole (Linux).
  EXPECT_EQ(map.Protect(a, 5 * 4096, kProtRead).error().code(), ENOMEM);
  EXPECT_EQ(prot.At(a + 3 * 4096), kProtRead);
  EXPECT_EQ(map.Protect(a - 4096, 2 * 4096, kProtAll).error().code(), ENOMEM);
  EXPECT_EQ(prot.At(a), kProtRead);
  map.Unmap(a + 2 * 4096, 4096);
  EXPECT_FALSE(prot.At(a + 2 * 4096));
  EXPECT_TRUE(map.Overlaps(a + 2 * 4096, 2 * 4096));
  EXPECT_FALSE(map.Overlaps(a + 2 * 4096, 4096));
}

TEST(MemoryMap, RemappedPagesKeepTheirProtection) {
  MemoryMap map = MakeMap();
  const uint64_t a = map.Map(0, 4096, false, kProtRead).value();
  const uint64_t moved = map.Remap(a, 4096, 3 * 4096, true).value();
  map.Unmap(a, 4096);
  EXPECT_FALSE(map.protections().At(a));
  EXPECT_EQ(map.protections().At(moved + 2 * 4096), kProtRead);
  EXPECT_EQ(map.Remap(moved, 0, 4096, true).error().code(), EINVAL);
  EXPECT_EQ(map.Remap(moved, ~0ULL, 4096, true).error().code(), EINVAL);  // wraps when aligned
}

TEST(MemoryMap, RestoredWithoutProtectionsEverythingMappedIsAccessible) {
  MemoryMap map = MakeMap();
  map.RestoreDynamicState(6 * kMiB, {{50 * kMiB, 4096}}, std::nullopt);
  EXPECT_EQ(map.protections().At(6 * kMiB - 1), kProtAll);
  EXPECT_FALSE(map.protections().At(6 * kMiB));
  EXPECT_EQ(map.protections().At(50 * kMiB), kProtAll);
  EXPECT_EQ(map.protections().At(102 * kMiB), kProtAll);
  EXPECT_FALSE(map.protections().has_changes());

  MemoryMap copy = MakeMap();
  copy.RestoreDynamicState(6 * kMiB, {{50 * kMiB, 4096}}, map.protections().spans());
  EXPECT_EQ(copy.protections(), map.protections());
}

}  // namespace
}  // namespace flurry
