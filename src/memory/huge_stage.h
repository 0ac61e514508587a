// HugeStage: where memory on demand stages a 2 MiB region of fetched memory as one transparent
// huge page before moving it into guest RAM (lazy_pages.h, "Huge regions"). It must lie in the
// address space that holds the guest RAM (the VMM's with KVM, the stub's with seccomp), outside
// the RAM, 2 MiB aligned, advised for huge pages, and be empty between fills.
//
// Thread: `fill` is called by LazyPages' handler thread only.
#pragma once

#include <cstdint>
#include <functional>

#include "base/error.h"

namespace flurry {

struct HugeStage {
  uint64_t host_address = 0;  // 0: none
  // Writes 2 MiB of memory there.
  std::function<Result<void>(const uint8_t* data)> fill;
};

// A stage in this process's own memory (KVM guest RAM, tests): a private anonymous mapping that
// lives as long as `fill` does.
Result<HugeStage> LocalHugeStage();

}  // namespace flurry
