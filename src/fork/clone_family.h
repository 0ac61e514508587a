// CloneFamily: what every VMM of one clone family shares — the family ID and the allocator of
// clone IDs, so IDs stay unique across nested clones. One shared-memory page created by the
// original VMM and inherited by every process forked from it.
//
// Thread/process safety: the counters are atomics in MAP_SHARED memory.
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstdint>

#include "base/error.h"
#include "base/mapping.h"

namespace flurry {

class CloneFamily {
 public:
  // A new family with a random ID; clone IDs start at 1.
  static Result<CloneFamily> Create();
  // The family `family_id` continued in another process tree (a clone restored on another
  // host): its own clones take IDs from `first_id` on.
  static Result<CloneFamily> Continue(uint64_t family_id, int32_t first_id);

  uint64_t family_id() const { return shared()->family_id; }
  // Reserves `count` consecutive clone IDs; returns the first.
  int32_t ReserveIds(int32_t count) { return shared()->next_id.fetch_add(count); }
  // Held around every write to the family's shared stdout/stderr (robust: a VM killed while
  // holding it does not block the others).
  pthread_mutex_t* output_lock() const { return &shared()->output_lock; }

 private:
  struct Shared {
    uint64_t family_id;
    std::atomic<int32_t> next_id;
    pthread_mutex_t output_lock;
  };
  static_assert(std::atomic<int32_t>::is_always_lock_free);
  explicit CloneFamily(Mapping page) : page_(std::move(page)) {}
  Shared* shared() const { return reinterpret_cast<Shared*>(page_.data()); }
  Mapping page_;
};

}  // namespace flurry
