#include "vmm/thread_slice.h"

#include <gtest/gtest.h>

namespace flurry {
namespace {

TEST(ThreadSlice, StartsAtTheShortestSlice) {
  EXPECT_EQ(ThreadSlice().length_ns(), ThreadSlice::kMinNs);
}

TEST(ThreadSlice, CheapSwitchesKeepTheShortestSlice) {
  ThreadSlice slice;
  for (int i = 0; i < 100; ++i) slice.NoteSwitch(10'000);  // 10 µs
  EXPECT_EQ(slice.length_ns(), ThreadSlice::kMinNs);
}

TEST(ThreadSlice, CostlySwitchesLengthenItToKCostShareTimesTheirCost) {
  ThreadSlice slice;
  for (int i = 0; i < 100; ++i) slice.NoteSwitch(100'000);  // 100 µs
  EXPECT_NEAR(slice.mean_cost_ns(), 100'000, 1'000);
  EXPECT_NEAR(slice.length_ns(), 100'000 * ThreadSlice::kCostShare,
              1'000 * ThreadSlice::kCostShare);
}

TEST(ThreadSlice, NeverLongerThanTheLongestSlice) {
  ThreadSlice slice;
  for (int i = 0; i < 100; ++i) slice.NoteSwitch(900'000);
  EXPECT_EQ(slice.length_ns(), ThreadSlice::kMaxNs);
}

TEST(ThreadSlice, ALongSampleRaisesTheMeanByAtMostThreeEighths) {
  ThreadSlice slice;
  for (int i = 0; i < 100; ++i) slice.NoteSwitch(100'000);
  const int64_t before = slice.mean_cost_ns();
  slice.NoteSwitch(3'000'000'000);  // the run thread preempted for 3 s
  EXPECT_LE(slice.mean_cost_ns(), before + before * 3 / 8 + 1);
  EXPECT_GT(slice.mean_cost_ns(), before);
  // From a mean of zero too, a sample counts as at most kSmallNs.
  ThreadSlice fresh;
  fresh.NoteSwitch(3'000'000'000);
  EXPECT_EQ(fresh.mean_cost_ns(), ThreadSlice::kSmallNs / 8);
  fresh.NoteSwitch(-5);  // a clock oddity
  EXPECT_GE(fresh.mean_cost_ns(), 0);
}

TEST(ThreadSlice, FollowsALastingRiseWithinAFewDozenSwitches) {
  ThreadSlice slice;
  for (int i = 0; i < 100; ++i) slice.NoteSwitch(10'000);
  for (int i = 0; i < 40; ++i) slice.NoteSwitch(250'000);
  EXPECT_EQ(slice.length_ns(), ThreadSlice::kMaxNs);
}

TEST(ThreadSlice, FollowsTheCostWhenItDrops) {
  ThreadSlice slice;
  for (int i = 0; i < 100; ++i) slice.NoteSwitch(500'000);
  EXPECT_EQ(slice.length_ns(), ThreadSlice::kMaxNs);
  for (int i = 0; i < 60; ++i) slice.NoteSwitch(5'000);
  EXPECT_EQ(slice.length_ns(), ThreadSlice::kMinNs);
}

}  // namespace
}  // namespace flurry
