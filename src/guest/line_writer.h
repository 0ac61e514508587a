// LineWriter: output of a VM whose stdout/stderr other VMs of its clone family share.
//
// In a clone it writes whole lines (optionally with a "[clone N] " prefix); a partial line
// waits for its newline, for kMaxLine bytes, or for Flush() (at exit). In the original VM it
// passes writes through unchanged. Either way each write to the host fd happens under the
// family's output lock (a process-shared mutex), so no VM's line is ever cut by another's —
// not even lines longer than PIPE_BUF, which a pipe would not write atomically.
//
// Owner: the OpenFile of a stdio fd in a clone; used on the vCPU thread.
#pragma once

#include <pthread.h>
#include <sys/uio.h>

#include <span>
#include <string>

namespace flurry {

class LineWriter {
 public:
  static constexpr size_t kMaxLine = 64 * 1024;

  // `lock` may be null (no family to share with). `line_buffered`: clones; else pass-through.
  LineWriter(int host_fd, std::string prefix, pthread_mutex_t* lock, bool line_buffered)
      : host_fd_(host_fd), prefix_(std::move(prefix)), lock_(lock), line_buffered_(line_buffered) {}

  // Takes all of iov (returns its total length), writing out every completed line.
  int64_t Write(std::span<const iovec> iov);
  // Writes out a pending partial line (a newline is not added).
  void Flush();

 private:
  void Emit(const char* data, size_t length);
  int64_t PassThrough(std::span<const iovec> iov);
  int host_fd_;
  std::string prefix_;
  pthread_mutex_t* lock_;
  bool line_buffered_;
  std::string pending_;
};

}  // namespace flurry
