// ThreadSlice: how long a guest thread runs on a lane before another runnable one takes it.
//
// A switch at a slice's end costs the lane the kick's exit, the hand-off of its stop to the
// run thread, one thread's CPU and FPU state saved and the other's loaded (vCPU ioctls on
// KVM), the hand-off back and the entry. The VMM feeds the slice what the backend measured of
// each such switch: how long the lane stood stopped (KVM: from the end of one KVM_RUN to the
// next), or else the delay from the kick to the next thread loaded. On KVM on PVM that is
// 75–250 µs, and 5 ms slices cost a 4-thread compute job on 2 vCPUs 6–12 % (docs/perf.md,
// "Time slices"). The slice is kCostShare times the mean of recent samples, within [kMinNs,
// kMaxNs]: short where switches are cheap, long where they are not. (200, not 100: a sample
// misses part of what a switch costs — the kick's exit, its after-effects in the guest —
// and with 100 that job still lost 2–8 % there, with 200 0–4 %.) Plain data, run thread
// only.
#pragma once

#include <algorithm>
#include <cstdint>

namespace flurry {

class ThreadSlice {
 public:
  static constexpr int64_t kMinNs = 5'000'000;
  static constexpr int64_t kMaxNs = 40'000'000;
  static constexpr int64_t kCostShare = 200;  // slice = 200 x switch cost
  // A sample counts as at most 4 times the mean (at least kSmallNs) and never above
  // kMaxSampleNs: one switch that took long (the run thread preempted) raises the mean by at
  // most 3/8 of itself, and a lasting rise is followed within a few switches.
  static constexpr int64_t kSmallNs = 50'000;
  static constexpr int64_t kMaxSampleNs = 2'000'000;

  // A switch at the end of a slice cost `cost_ns`.
  void NoteSwitch(int64_t cost_ns) {
    const int64_t cap = std::min(kMaxSampleNs, std::max(4 * mean_cost_ns_, kSmallNs));
    cost_ns = std::clamp<int64_t>(cost_ns, 0, cap);
    // A moving average over about the last 8 switches.
    mean_cost_ns_ = (7 * mean_cost_ns_ + cost_ns) / 8;
  }

  int64_t length_ns() const { return std::clamp(mean_cost_ns_ * kCostShare, kMinNs, kMaxNs); }
  int64_t mean_cost_ns() const { return mean_cost_ns_; }

 private:
  int64_t mean_cost_ns_ = 0;
};

}  // namespace flurry
