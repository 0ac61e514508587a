// VmmAliveWord: lets the kernel tell a stub that the VMM process driving it has died, however
// it died (SIGKILL included), without trusting anything in the page the guest can write.
//
// A sentinel thread of the VMM process registers a robust futex list of its own (set_robust_list)
// that lives in the VMM's private memory and has one entry: the stub page's `vmm_alive` word,
// which holds the sentinel's TID. When the process dies, the kernel walks that list and sets
// FUTEX_OWNER_DIED in the word; the stub checks the bit (stub.c: check_vmm_alive). The guest can
// only write the word itself: it can make its own stub end, or lose the notice — never make
// the VMM write anywhere.
//
// One word per process at a time (the stub the process drives); Point() moves it. Threads: any
// (a mutex guards the list); a forked child starts its own sentinel on first use.
#pragma once

#include <cstdint>

#include "base/error.h"

namespace flurry {

// Makes *word the one the kernel marks when this process dies (writes the sentinel's TID into
// it). Starts the sentinel thread in this process if it has none.
Result<void> PointVmmAliveWord(volatile uint32_t* word);
// The word is being unmapped: the kernel must not touch it any more.
void ForgetVmmAliveWord(volatile uint32_t* word);

}  // namespace flurry
