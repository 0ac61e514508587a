#include "guest/line_writer.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace flurry {

namespace {

// Holds a robust process-shared mutex; a holder that died leaves it consistent-able.
class OutputLockGuard {
 public:
  explicit OutputLockGuard(pthread_mutex_t* lock) : lock_(lock) {
    if (lock_ != nullptr && pthread_mutex_lock(lock_) == EOWNERDEAD) {
      pthread_mutex_consistent(lock_);
    }
  }
  ~OutputLockGuard() {
    if (lock_ != nullptr) pthread_mutex_unlock(lock_);
  }
  OutputLockGuard(const OutputLockGuard&) = delete;
  OutputLockGuard& operator=(const OutputLockGuard&) = delete;

 private:
  pthread_mutex_t* lock_;
};

// Writes all of data (looping on partial writes). False when the reader is gone.
bool WriteFully(int fd, const char* data, size_t length) {
  size_t done = 0;
  while (done < length) {
    ssize_t n = ::write(fd, data + done, length - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) {  // a non-blocking host stdout: wait until it drains
      pollfd p{fd, POLLOUT, 0};
      poll(&p, 1, -1);
      continue;
    }
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

}  // namespace

int64_t LineWriter::PassThrough(std::span<const iovec> iov) {
  OutputLockGuard guard(lock_);
  int64_t total = 0;
  for (const iovec& part : iov) {
    if (!WriteFully(host_fd_, static_cast<const char*>(part.iov_base), part.iov_len)) {
      return total > 0 ? total : -errno;
    }
    total += static_cast<int64_t>(part.iov_len);
  }
  return total;
}

int64_t LineWriter::Write(std::span<const iovec> iov) {
  if (!line_buffered_) return PassThrough(iov);
  int64_t total = 0;
  for (const iovec& part : iov) {
    const char* data = static_cast<const char*>(part.iov_base);
    size_t length = part.iov_len;
    total += static_cast<int64_t>(length);
    while (length > 0) {
      const void* newline = std::memchr(data, '\n', length);
      size_t take = newline ? static_cast<const char*>(newline) - data + 1 : length;
      const bool line_ends = newline != nullptr && take <= kMaxLine - pending_.size();
      take = std::min(take, kMaxLine - pending_.size());
      pending_.append(data, take);
      data += take;
      length -= take;
      if (line_ends || pending_.size() >= kMaxLine) {
        Emit(pending_.data(), pending_.size());
        pending_.clear();
      }
    }
  }
  return total;
}

void LineWriter::Flush() {
  if (pending_.empty()) return;
  Emit(pending_.data(), pending_.size());
  pending_.clear();
}

void LineWriter::Emit(const char* data, size_t length) {
  std::string line;
  line.reserve(prefix_.size() + length);
  line.append(prefix_).append(data, length);
  OutputLockGuard guard(lock_);
  // A reader that is gone drops the line, as a closed pipe would.
  (void)WriteFully(host_fd_, line.data(), line.size());
}

}  // namespace flurry
