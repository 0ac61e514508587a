#include "net/push_pacer.h"

#include <gtest/gtest.h>

namespace flurry {
namespace {

constexpr int64_t kMs = 1'000'000;
constexpr uint64_t kReply = 64 * 4096;  // a 64-page reply

TEST(PushPacerTest, ABurstGoesAtOnceThenTheRateHoldsItBack) {
  PushPacer pacer(0);
  // 512 MiB/s x 4 ms, at most 2 MiB, of burst: eight 64-page replies, not nine.
  int sent = 0;
  while (pacer.Admit(kReply, 0)) ++sent;
  EXPECT_EQ(sent, 8);
  // 1 ms later, 512 KiB more may go: two replies.
  sent = 0;
  while (pacer.Admit(kReply, 1 * kMs)) ++sent;
  EXPECT_EQ(sent, 2);
}

TEST(PushPacerTest, ALossHalvesTheRateOncePerInterval) {
  PushPacer pacer(0);
  const double start = pacer.rate();
  EXPECT_TRUE(pacer.NoteOwnLoss(0));
  EXPECT_DOUBLE_EQ(pacer.rate(), start / 2);
  // More reports of the same overflow, within the interval: no further cut.
  EXPECT_FALSE(pacer.NoteOwnLoss(5 * kMs));
  EXPECT_FALSE(pacer.NoteOwnLoss(PushPacer::kCutIntervalNs - 1));
  EXPECT_DOUBLE_EQ(pacer.rate(), start / 2);  // (nor growth: nothing was held back)
  EXPECT_TRUE(pacer.NoteOwnLoss(PushPacer::kCutIntervalNs));
  EXPECT_DOUBLE_EQ(pacer.rate(), start / 4);
}

TEST(PushPacerTest, TheRateGrowsOnlyWhilePushesAreHeldBackAndStaysWithinItsBounds) {
  PushPacer pacer(0);
  int64_t now = 0;
  for (int i = 0; i < 40; ++i) {
    now = i * PushPacer::kCutIntervalNs;
    EXPECT_TRUE(pacer.NoteOwnLoss(now));
  }
  EXPECT_DOUBLE_EQ(pacer.rate(), PushPacer::kMinRate);
  // Offered more than it lets out (a 64 MiB push never fits), it grows by kIncrease per
  // second from the first push held back.
  constexpr uint64_t kTooMuch = 64u << 20;
  for (int ms = 1; ms <= 100; ++ms) EXPECT_FALSE(pacer.Admit(kTooMuch, now + ms * kMs));
  EXPECT_NEAR(pacer.rate(), PushPacer::kMinRate + PushPacer::kIncrease * 0.099, 1.0);
  // ... up to the ceiling.
  for (int ms = 101; ms <= 10'000; ++ms) pacer.Admit(kTooMuch, now + ms * kMs);
  EXPECT_DOUBLE_EQ(pacer.rate(), PushPacer::kMaxRate);
  // Unused, a rate does not grow: ten idle seconds, then pushes that fit.
  PushPacer idle(0);
  EXPECT_TRUE(idle.Admit(4096, 10'000 * kMs));
  EXPECT_TRUE(idle.Admit(4096, 10'001 * kMs));
  EXPECT_DOUBLE_EQ(idle.rate(), PushPacer::kStartRate);
  // Nor does a push held back, then a long pause, count as a long time held back.
  PushPacer paused(0);
  EXPECT_FALSE(paused.Admit(kTooMuch, 0));
  paused.Admit(0, 10'000 * kMs);
  EXPECT_NEAR(paused.rate(), PushPacer::kStartRate + PushPacer::kIncrease * 0.02, 1.0);
}

TEST(PushPacerTest, AfterACutLessGoesPerSecond) {
  // Admitted bytes over 100 ms of steady offers, before and after four cuts.
  auto admitted = [](PushPacer& pacer, int64_t from) {
    uint64_t bytes = 0;
    for (int64_t t = from; t < from + 100 * kMs; t += kMs / 10) {
      if (pacer.Admit(kReply / 4, t)) bytes += kReply / 4;
    }
    return bytes;
  };
  PushPacer pacer(0);
  const uint64_t before = admitted(pacer, 0);
  for (int i = 0; i < 4; ++i) pacer.NoteOwnLoss(100 * kMs + i * PushPacer::kCutIntervalNs);
  const int64_t from = 100 * kMs + 3 * PushPacer::kCutIntervalNs;
  const uint64_t after = admitted(pacer, from);
  EXPECT_LT(after * 3, before) << before << " then " << after;
  EXPECT_GT(after, 0u);
}

TEST(PushPacerTest, LossesOfMoreThanHalfTheReceiversCutTheRate) {
  PushPacer pacer(0);
  const double start = pacer.rate();
  for (uint64_t id = 1; id <= 4; ++id) pacer.AddReceiver(id);
  pacer.AddReceiver(4);  // (once)
  EXPECT_EQ(pacer.receivers(), 4u);
  // One slow receiver, losing again and again: the others keep the rate.
  for (int64_t t = 0; t < 200 * kMs; t += 10 * kMs) EXPECT_FALSE(pacer.NoteLoss(1, t));
  // A second one within the window: still half, not more.
  EXPECT_FALSE(pacer.NoteLoss(2, 200 * kMs));
  EXPECT_DOUBLE_EQ(pacer.rate(), start);  // never cut
  // A third: cut.
  EXPECT_TRUE(pacer.NoteLoss(3, 210 * kMs));
  EXPECT_LT(pacer.rate(), start);
  // Losses older than the window do not count: 2 and 3 lost long ago, 4 now.
  const int64_t later = 210 * kMs + PushPacer::kLossWindowNs;
  EXPECT_FALSE(pacer.NoteLoss(4, later));
  // With the slow one gone, one of the three left is not more than half; two are.
  pacer.RemoveReceiver(1);
  EXPECT_FALSE(pacer.NoteLoss(4, later + kMs));
  EXPECT_TRUE(pacer.NoteLoss(2, later + 2 * kMs));
  // A receiver not added before counts from its first report: one of one.
  PushPacer alone(0);
  EXPECT_TRUE(alone.NoteLoss(9, 0));
  EXPECT_EQ(alone.receivers(), 1u);
}

TEST(PushPacerTest, AClockThatGoesBackAddsNothing) {
  PushPacer pacer(100 * kMs);
  while (pacer.Admit(kReply, 100 * kMs)) {
  }
  EXPECT_FALSE(pacer.Admit(kReply, 50 * kMs));
  EXPECT_FALSE(pacer.Admit(kReply, 100 * kMs));
}

}  // namespace
}  // namespace flurry
