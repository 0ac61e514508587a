#include "memory/protection_map.h"

#include <gtest/gtest.h>

#include <tuple>

namespace flurry {
namespace {

constexpr uint64_t P = 4096;

using Piece = std::tuple<uint64_t, uint64_t, int>;  // start, length, prot (-1: not mapped)

std::vector<Piece> Runs(const ProtectionMap& map, uint64_t start, uint64_t length) {
  std::vector<Piece> runs;
  map.ForEachRun(start, length, [&](uint64_t s, uint64_t l, std::optional<uint8_t> prot) {
    runs.emplace_back(s, l, prot ? *prot : -1);
  });
  return runs;
}

TEST(ProtectionMapTest, EmptyMapHasOneUnmappedRun) {
  ProtectionMap map;
  EXPECT_EQ(Runs(map, 10 * P, 4 * P), (std::vector<Piece>{{10 * P, 4 * P, -1}}));
  EXPECT_FALSE(map.At(10 * P));
  EXPECT_FALSE(map.Overlaps(0, 100 * P));
  EXPECT_FALSE(map.Covers(0, P));
}

TEST(ProtectionMapTest, SetSplitsAndMergesSpans) {
  ProtectionMap map;
  map.Set(10 * P, 10 * P, kProtReadWrite);
  map.Set(12 * P, 2 * P, kProtRead);
  EXPECT_EQ(Runs(map, 9 * P, 12 * P), (std::vector<Piece>{{9 * P, P, -1},
                                                          {10 * P, 2 * P, kProtReadWrite},
                                                          {12 * P, 2 * P, kProtRead},
                                                          {14 * P, 6 * P, kProtReadWrite},
                                                          {20 * P, P, -1}}));
  EXPECT_EQ(map.spans().size(), 3u);
  // Setting the middle back joins the three spans into one.
  map.Set(12 * P, 2 * P, kProtReadWrite);
  ASSERT_EQ(map.spans().size(), 1u);
  EXPECT_EQ(map.spans().begin()->first, 10 * P);
  EXPECT_EQ(map.spans().begin()->second.end, 20 * P);
  // Adjacent spans of one protection join too.
  map.Set(20 * P, P, kProtReadWrite);
  map.Set(9 * P, P, kProtReadWrite);
  ASSERT_EQ(map.spans().size(), 1u);
  EXPECT_EQ(map.spans().begin()->first, 9 * P);
  EXPECT_EQ(map.spans().begin()->second.end, 21 * P);
}

TEST(ProtectionMapTest, ClearPunchesHoles) {
  ProtectionMap map;
  map.Set(0, 8 * P, kProtAll);
  map.Clear(2 * P, 2 * P);
  EXPECT_EQ(map.At(P), kProtAll);
  EXPECT_FALSE(map.At(2 * P));
  EXPECT_FALSE(map.At(3 * P + 5));
  EXPECT_EQ(map.At(4 * P), kProtAll);
  EXPECT_TRUE(map.Overlaps(P, 2 * P));
  EXPECT_FALSE(map.Covers(P, 2 * P));
  EXPECT_TRUE(map.Covers(4 * P, 4 * P));
  EXPECT_FALSE(map.Covers(4 * P, 5 * P));
  map.Clear(0, 100 * P);
  EXPECT_TRUE(map.spans().empty());
}

TEST(ProtectionMapTest, ProtectionNoneIsMapped) {
  ProtectionMap map;
  map.Set(0, 2 * P, 0);
  ASSERT_TRUE(map.At(P));
  EXPECT_EQ(*map.At(P), 0);
  EXPECT_TRUE(map.Covers(0, 2 * P));
}

TEST(ProtectionMapTest, AccessRunsJoinWhatX86CannotTellApart) {
  ProtectionMap map;
  map.Set(P, P, 0);               // PROT_NONE: no access, like the hole before it
  map.Set(2 * P, P, kProtWrite);  // write-only: read/write on x86
  map.Set(3 * P, P, kProtReadWrite);
  map.Set(4 * P, P, kProtExec);  // execute-only: read/execute
  std::vector<Piece> runs;
  map.ForEachAccessRun(
      0, 6 * P, [&](uint64_t s, uint64_t l, uint8_t access) { runs.emplace_back(s, l, access); });
  EXPECT_EQ(runs, (std::vector<Piece>{{0, 2 * P, 0},
                                      {2 * P, 2 * P, kProtReadWrite},
                                      {4 * P, P, kProtRead | kProtExec},
                                      {5 * P, P, 0}}));
}

TEST(ProtectionMapTest, UnknownBitsAreDropped) {
  ProtectionMap map;
  map.Set(0, P, 0xff);
  EXPECT_EQ(map.At(0), kProtAll);
}

TEST(ProtectionMapTest, ChangesAreRecordedOnceAndJoined) {
  ProtectionMap map;
  map.Set(0, 4 * P, kProtRead);
  map.Set(4 * P, 4 * P, kProtReadWrite);
  map.Clear(20 * P, P);  // nothing mapped there: no change
  map.Clear(2 * P, P);
  auto changes = map.TakeChanges();
  EXPECT_EQ(changes, (std::vector<std::pair<uint64_t, uint64_t>>{{0, 8 * P}, {2 * P, P}}));
  EXPECT_FALSE(map.has_changes());
  EXPECT_TRUE(map.TakeChanges().empty());
}

TEST(ProtectionMapTest, RestoreRecordsNothing) {
  ProtectionMap a;
  a.Set(P, P, kProtRead);
  ProtectionMap b;
  b.Restore(a.spans());
  EXPECT_EQ(a, b);
  EXPECT_FALSE(b.has_changes());
}

TEST(ProtectionMapTest, RangesAtTheTopOfTheAddressSpaceDoNotWrap) {
  ProtectionMap map;
  map.Set(~0ULL - P + 1, P, kProtRead);  // would wrap: ignored
  EXPECT_TRUE(map.spans().empty());
  map.Set(P, P, kProtRead);
  map.Clear(0, ~0ULL);
  EXPECT_TRUE(map.spans().empty());
}

}  // namespace
}  // namespace flurry
