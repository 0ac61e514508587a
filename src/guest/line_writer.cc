#include "guest/line_writer.h"

#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace flurry {

int64_t LineWriter::Write(std::span<const iovec> iov) {
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
  size_t done = 0;
  while (done < line.size()) {
    ssize_t n = ::write(host_fd_, line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the reader is gone: drop the line, as a closed pipe would
    done += static_cast<size_t>(n);
  }
}

}  // namespace flurry
