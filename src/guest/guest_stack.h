// GuestStack: Linux's stack_t as sigaltstack passes it (x86-64): a thread's alternate signal
// stack. Plain data, held by the running thread's SignalState and by every other GuestThread.
#pragma once

#include <cstdint>

namespace flurry {

struct GuestStack {  // stack_t
  uint64_t sp = 0;
  int32_t flags = 2;  // SS_DISABLE
  int32_t pad = 0;
  uint64_t size = 0;

  bool operator==(const GuestStack&) const = default;
};
static_assert(sizeof(GuestStack) == 24);

}  // namespace flurry
