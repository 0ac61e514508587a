// Waiting, with a deadline, until a descriptor has something to read (or end of file).
#pragma once

#include <chrono>

#include "base/error.h"

namespace flurry {

// Polls `fd` for input until `deadline` (at least once, so a ready fd passes even past it).
// ETIMEDOUT with `what` when nothing came by then; EINTR is retried.
Result<void> WaitReadable(int fd, std::chrono::steady_clock::time_point deadline, const char* what);

}  // namespace flurry
