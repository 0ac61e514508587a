// LineWriter: output of a clone, written to the host fd whole lines at a time (one write(2) per
// line, optionally with a "[clone N] " prefix), so the lines of many clones sharing the
// parent's stdout/stderr never interleave mid-line. A partial line waits for its newline, for
// kMaxLine bytes, or for Flush() (at exit).
//
// Owner: the OpenFile of a stdio fd in a clone; used on the vCPU thread.
#pragma once

#include <span>
#include <string>
#include <sys/uio.h>

namespace flurry {

class LineWriter {
 public:
  static constexpr size_t kMaxLine = 64 * 1024;

  LineWriter(int host_fd, std::string prefix) : host_fd_(host_fd), prefix_(std::move(prefix)) {}

  // Takes all of iov (returns its total length), writing out every completed line.
  int64_t Write(std::span<const iovec> iov);
  // Writes out a pending partial line (a newline is not added).
  void Flush();

 private:
  void Emit(const char* data, size_t length);
  int host_fd_;
  std::string prefix_;
  std::string pending_;
};

}  // namespace flurry
