#include "snapshot/pipe_contents.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <string>

namespace flurry {

Result<uint64_t> HostPipeId(int host_fd) {
  struct stat st {};
  if (fstat(host_fd, &st) != 0) return FailErrno("examining a pipe");
  if (!S_ISFIFO(st.st_mode)) return Fail("not a pipe");
  return static_cast<uint64_t>(st.st_ino);
}

Result<PipeRecord> CapturePipe(int host_fd, uint64_t id) {
  PipeRecord record;
  record.id = id;
  const int capacity = fcntl(host_fd, F_GETPIPE_SZ);
  if (capacity <= 0) return FailErrno("reading a pipe's capacity");
  record.capacity = static_cast<uint32_t>(capacity);

  UniqueFd reopened;
  int read_end = host_fd;
  const int status = fcntl(host_fd, F_GETFL);
  if (status < 0) return FailErrno("reading a pipe end's flags");
  if ((status & O_ACCMODE) != O_RDONLY) {
    // tee reads from a read end; opening the pipe again through /proc gives one.
    const std::string path = "/proc/self/fd/" + std::to_string(host_fd);
    reopened.Reset(open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
    if (!reopened.valid()) return FailErrno("opening a read end of a pipe");
    read_end = reopened.get();
  }
  int copy[2];
  if (pipe2(copy, O_CLOEXEC | O_NONBLOCK) != 0) return FailErrno("making a pipe");
  UniqueFd copy_read(copy[0]), copy_write(copy[1]);
  // The copy has room for everything the pipe holds: as many slots as its capacity.
  if (fcntl(copy_write.get(), F_SETPIPE_SZ, capacity) < capacity) {
    return FailErrno("sizing a pipe for a copy");
  }
  // tee copies from the start of the pipe each time: one call must take everything the pipe
  // holds. Someone reading it meanwhile (another process, not stopped) makes it take less:
  // then again, from an empty copy.
  for (int attempt = 0; attempt < 4; ++attempt) {
    int queued = 0;
    if (ioctl(read_end, FIONREAD, &queued) != 0) return FailErrno("reading a pipe's byte count");
    if (queued == 0) return record;
    const ssize_t teed =
        tee(read_end, copy_write.get(), static_cast<size_t>(queued), SPLICE_F_NONBLOCK);
    if (teed < 0 && errno != EAGAIN) return FailErrno("copying a pipe's contents");
    record.contents.resize(teed > 0 ? static_cast<size_t>(teed) : 0);
    size_t done = 0;
    while (done < record.contents.size()) {
      const ssize_t n =
          read(copy_read.get(), record.contents.data() + done, record.contents.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return FailErrno("reading a copy of a pipe's contents");
      done += static_cast<size_t>(n);
    }
    if (teed == queued) return record;
  }
  return Fail("copying a pipe's contents: it changed under every attempt");
}

Result<PipeEnds> MakePipe(const PipeRecord& record, bool packet_mode) {
  if (record.contents.size() > record.capacity) {
    return Fail("pipe {} holds {} bytes, more than its capacity {}", record.id,
                record.contents.size(), record.capacity);
  }
  int ends[2];
  if (pipe2(ends, O_CLOEXEC | O_NONBLOCK | (packet_mode ? O_DIRECT : 0)) != 0) {
    return FailErrno("making a pipe");
  }
  PipeEnds pipe{UniqueFd(ends[0]), UniqueFd(ends[1])};
  const int capacity = fcntl(pipe.write.get(), F_GETPIPE_SZ);
  if (capacity < static_cast<int>(record.capacity) &&
      fcntl(pipe.write.get(), F_SETPIPE_SZ, static_cast<int>(record.capacity)) < 0 &&
      record.contents.size() > static_cast<size_t>(capacity)) {
    return FailErrno(fmt::format("giving a pipe a capacity of {} bytes", record.capacity));
  }
  size_t done = 0;
  while (done < record.contents.size()) {
    const ssize_t n =
        write(pipe.write.get(), record.contents.data() + done, record.contents.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return FailErrno("filling a pipe");
    done += static_cast<size_t>(n);
  }
  return pipe;
}

}  // namespace flurry
