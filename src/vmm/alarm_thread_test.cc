#include "vmm/alarm_thread.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <ctime>

namespace flurry {
namespace {

int64_t NowNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec;
}

void WaitFor(const std::atomic<int>& count, int value) {
  const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (count.load() < value && std::chrono::steady_clock::now() < give_up) {
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

TEST(AlarmThread, FiresOnceAtTheDeadlineAndNotBefore) {
  std::atomic<int> fired{0};
  std::atomic<int64_t> fired_at{0};
  AlarmThread alarm([&] {
    fired_at.store(NowNs());
    fired.fetch_add(1);
  });
  const int64_t deadline = NowNs() + 50'000'000;
  alarm.Set(deadline);
  WaitFor(fired, 1);
  EXPECT_EQ(fired.load(), 1);
  EXPECT_GE(fired_at.load(), deadline);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(fired.load(), 1) << "one deadline, one call";
}

TEST(AlarmThread, ADeadlineMovedOrClearedIsTheOneThatCounts) {
  std::atomic<int> fired{0};
  AlarmThread alarm([&] { fired.fetch_add(1); });
  alarm.Set(NowNs() + 10'000'000'000);  // far away
  alarm.Set(0);                         // cleared
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(fired.load(), 0);
  alarm.Set(NowNs() - 1);  // past: at once
  WaitFor(fired, 1);
  EXPECT_EQ(fired.load(), 1);
}

TEST(AlarmThread, StopEndsTheThreadAndSetStartsAnother) {
  std::atomic<int> fired{0};
  AlarmThread alarm([&] { fired.fetch_add(1); });
  alarm.Set(NowNs() + 10'000'000'000);
  alarm.Stop();  // joins promptly, without firing
  EXPECT_EQ(fired.load(), 0);
  alarm.Set(NowNs() + 1'000'000);
  WaitFor(fired, 1);
  EXPECT_EQ(fired.load(), 1);
}

}  // namespace
}  // namespace flurry
