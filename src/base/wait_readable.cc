#include "base/wait_readable.h"

#include <poll.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>

namespace flurry {

Result<void> WaitReadable(int fd, std::chrono::steady_clock::time_point deadline,
                          const char* what) {
  pollfd pfd{fd, POLLIN, 0};
  for (;;) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    const int ready =
        poll(&pfd, 1, static_cast<int>(std::clamp<int64_t>(left.count(), 0, int64_t{1} << 30)));
    if (ready > 0) return {};
    if (ready < 0 && errno != EINTR) return FailErrno(what);
    if (ready == 0 && left.count() <= 0) return FailErrno(ETIMEDOUT, what);
  }
}

}  // namespace flurry
