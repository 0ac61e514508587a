// The host's CLOCK_MONOTONIC in nanoseconds: timing inside the VMM (timeouts, costs, ages).
// Guest time is guest/guest_time.h's (offset clocks).
#pragma once

#include <time.h>

#include <cstdint>

namespace flurry {

inline int64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

}  // namespace flurry
