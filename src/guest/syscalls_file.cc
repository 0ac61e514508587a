// The file syscalls: read/write and friends on the guest's FdTable, and the path syscalls on
// its HostDir. Handlers run on the vCPU thread (see syscall.h).
//
// Guest buffers are used in place: a read(2) goes straight from the host fd into guest RAM
// through a span GuestMemory has checked (EFAULT when any byte of [buf, buf+count) lies outside
// user memory). Guest paths are read with a 4096-byte limit (ENAMETOOLONG). x86-64 Linux guest
// and host share every structure layout copied here (stat, statx, iovec, termios, winsize).
#include <csignal>
#include <cstring>

#include "guest/guest_time.h"
#include "guest/signal_state.h"
#include "guest/signalfd.h"
#include "guest/syscalls_file_support.h"

namespace flurry {
namespace file_syscalls {
namespace {

// ---- Reading and writing -----------------------------------------------------------------

// A read of a signalfd: the pending signals of its mask, a signalfd_siginfo each, scattered
// over iov; none pending parks the thread (ParkOnFd: its host eventfd becomes readable when
// one is) or fails with EAGAIN (O_NONBLOCK). Never at an offset (ESPIPE, as Linux).
Value ReadSignalfd(SyscallContext& context, OpenFile& file, std::span<iovec> iov, int64_t offset) {
  if (offset >= 0) return FailErrno(ESPIPE, "signalfd read at an offset");
  size_t room = 0;
  for (const iovec& v : iov) room += v.iov_len;
  constexpr size_t kMaxRecords = 64;  // one per signal number (a short read if more are queued)
  std::vector<uint8_t> records(std::min(room, kMaxRecords * sizeof(signalfd_siginfo)));
  const size_t filled = FLURRY_TRY(TakeSignalfdSignals(context.state, file, records));
  if (filled == 0) {
    if (GuestWaitsOn(file)) {
      const Value parked = ParkOnFd(context, file, POLLIN);
      // A signal of the mask sent to this thread alone wakes it too (the eventfd tells the
      // process's).
      context.state.threads.block->signal_set = file.event.signal_mask;
      return parked;
    }
    return FailErrno(EAGAIN, "signalfd: no signal of its mask pending");
  }
  size_t done = 0;
  for (const iovec& v : iov) {
    const size_t n = std::min(v.iov_len, filled - done);
    std::memcpy(v.iov_base, records.data() + done, n);
    done += n;
    if (done == filled) break;
  }
  return static_cast<int64_t>(filled);
}

// One readv/preadv (offset < 0: at the file offset); a short read is the guest's to handle.
// A pipe or stdio the guest reads without O_NONBLOCK that has nothing to read parks the
// thread (ParkOnFd) rather than the whole VMM.
Value ReadInto(SyscallContext& context, OpenFile& file, std::span<iovec> iov, int64_t offset) {
  if (file.kind == FileKind::kSignalfd) return ReadSignalfd(context, file, iov, offset);
  const bool waits = GuestWaitsOn(file);
  const bool wants_bytes =
      std::any_of(iov.begin(), iov.end(), [](const iovec& v) { return v.iov_len != 0; });
  if (waits && wants_bytes && file.kind == FileKind::kStdio && offset < 0) {
    // The borrowed stdio may be a blocking host fd: read it only when something is there (or
    // its end: POLLHUP, POLLERR count as ready).
    pollfd ready{.fd = file.host_fd(), .events = POLLIN, .revents = 0};
    if (poll(&ready, 1, 0) == 0) return ParkOnFd(context, file, POLLIN);
  }
  for (;;) {
    ssize_t n = offset < 0
                    ? readv(file.host_fd(), iov.data(), static_cast<int>(iov.size()))
                    : preadv(file.host_fd(), iov.data(), static_cast<int>(iov.size()), offset);
    if (n >= 0) return n;
    if (errno == EINTR) {
      if (context.KeepWaiting()) continue;
      errno = EINTR;
    } else if (errno == EAGAIN && waits) {
      return ParkOnFd(context, file, POLLIN);
    }
    return HostError("read");
  }
}

// Linux's pipe_write: a write to a pipe without readers raises SIGPIPE for the writing thread
// (SI_USER, sent by the process itself), besides failing with EPIPE.
void RaiseSigpipe(SyscallContext& context) {
  constexpr int32_t kSiUser = 0;
  SignalState& signals = context.state.signals;
  RaiseThreadSignal(signals, signals.thread_pending, signals.blocked, SIGPIPE,
                    PendingSignalInfo{.code = kSiUser, .pid = context.state.identity.pid});
}

// The bytes this write (or writev) wrote before it parked for the rest, if it is being made
// again (ThreadTable::resumed); they are not written again.
uint64_t ResumedBytes(SyscallContext& context, const SyscallArgs& args) {
  std::optional<PartialWrite>& resumed = context.state.threads.resumed;
  if (!resumed || !resumed->Matches(args.nr, {args.arg[0], args.arg[1], args.arg[2]})) return 0;
  const uint64_t done = resumed->done;
  resumed.reset();
  return done;
}

// Drops the first `bytes` of iov.
void SkipBytes(std::span<iovec>& iov, uint64_t bytes) {
  while (!iov.empty() && bytes >= iov.front().iov_len) {
    bytes -= iov.front().iov_len;
    iov = iov.subspan(1);
  }
  if (!iov.empty() && bytes > 0) {
    iov.front().iov_base = static_cast<uint8_t*>(iov.front().iov_base) + bytes;
    iov.front().iov_len -= bytes;
  }
}

// A write to an eventfd whose count this value would overflow waits for a read to lower it.
// The eventfd's POLLOUT cannot tell (it is set while the count is below its maximum, whatever
// the value), so the thread makes the write again a millisecond later.
Value RetryEventfdWrite(SyscallContext& context) {
  constexpr int64_t kRetryNs = 1'000'000;
  ThreadBlock block{.wait = ThreadWait::kFd,
                    .deadline_ns = GuestMonotonicNs(context.state.monotonic_offset_ns) + kRetryNs};
  block.restart_at_deadline = true;
  context.state.threads.block = std::move(block);
  return 0;
}

// Writes all of iov, looping on partial writes (a terminal or pipe may take part of one).
// Returns the bytes written; an error only when nothing was. A pipe the guest writes without
// O_NONBLOCK that is full parks the thread (ParkOnFd) until it has room; with `call` (write,
// writev) the bytes written so far go with it (PartialWrite: made again, the call goes on
// after them; a signal ends it with their count, as Linux's pipe_write), without (sendfile) a
// partial write returns its count. EPIPE raises SIGPIPE. `already`: the bytes of this call
// written before it parked last.
Value WriteFrom(SyscallContext& context, const OpenFile& file, std::span<iovec> iov, int64_t offset,
                const SyscallArgs* call = nullptr, uint64_t already = 0) {
  if (file.kind == FileKind::kSignalfd) {
    return FailErrno(offset >= 0 ? ESPIPE : EINVAL, "write to a signalfd");
  }
  if (file.line_writer != nullptr && offset < 0) return file.line_writer->Write(iov);
  int64_t total = 0;
  const auto written = [&] { return static_cast<int64_t>(already) + total; };
  for (;;) {
    ssize_t n = offset < 0 ? writev(file.host_fd(), iov.data(), static_cast<int>(iov.size()))
                           : pwritev(file.host_fd(), iov.data(), static_cast<int>(iov.size()),
                                     offset + total);
    if (n < 0) {
      if (errno == EINTR) {
        if (context.KeepWaiting()) continue;
        errno = EINTR;
      } else if (errno == EAGAIN && HostFdNonblocking(file.kind) && GuestWaitsOn(file)) {
        if (written() > 0 && call == nullptr) return written();
        if (file.kind == FileKind::kEventfd) return RetryEventfdWrite(context);
        (void)ParkOnFd(context, file, POLLOUT);
        if (written() > 0) {
          context.state.threads.block->partial =
              PartialWrite{.nr = call->nr,
                           .args = {call->arg[0], call->arg[1], call->arg[2]},
                           .done = static_cast<uint64_t>(written())};
        }
        return 0;
      } else if (WaitIfStdio(context, file, POLLOUT)) {
        continue;
      } else if (errno == EPIPE) {
        RaiseSigpipe(context);
        errno = EPIPE;
      }
      if (written() > 0) return written();
      return HostError("write");
    }
    total += n;
    // An eventfd takes one count per write (never part of one): its answer is the answer.
    if (file.kind == FileKind::kEventfd || n == 0) return written();
    SkipBytes(iov, static_cast<uint64_t>(n));
    if (iov.empty()) return written();
  }
}

// read/write/pread64/pwrite64: one guest buffer as a single iovec.
// `already`: a write made again after it parked with that many bytes written.
Value BufferIo(SyscallContext& context, const SyscallArgs& args, bool write, int64_t offset,
               uint64_t already = 0) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  uint64_t count = std::min(args.arg[2], kMaxRw);
  char empty = 0;
  iovec iov{&empty, 0};
  std::optional<GuestWindow> window;
  const GuestAccess access = write ? GuestAccess::kRead : GuestAccess::kWrite;
  if (count != 0) {
    // A buffer that becomes inaccessible part way makes a short read or write; none at all,
    // EFAULT (from Window).
    if (const uint64_t ok = context.memory.AccessibleBytes(args.arg[1], count, access); ok != 0) {
      count = ok;
    }
    window = FLURRY_TRY(context.memory.Window(args.arg[1], count, access));
    iov = {window->bytes().data(), count};
  }
  if (write) {
    if (window) FLURRY_TRY(window->Load());
    std::span<iovec> rest(&iov, 1);
    SkipBytes(rest, already);
    return WriteFrom(context, *file, rest, offset, offset < 0 ? &args : nullptr, already);
  }
  const int64_t n = FLURRY_TRY(ReadInto(context, *file, {&iov, 1}, offset));
  if (window && n > 0) FLURRY_TRY(window->Store(static_cast<uint64_t>(n)));
  return n;
}

Value Read(SyscallContext& context, const SyscallArgs& args) {
  return BufferIo(context, args, /*write=*/false, -1);
}

// A write made again after it parked with part written (ThreadTable::resumed) reports those
// bytes whatever fails now (the fd closed or the buffer unmapped meanwhile), as Linux's
// pipe_write returns what it wrote.
Value WithResumed(uint64_t already, Value value) {
  if (!value && already > 0) return static_cast<int64_t>(already);
  return value;
}

Value Write(SyscallContext& context, const SyscallArgs& args) {
  const uint64_t already = ResumedBytes(context, args);
  return WithResumed(already, BufferIo(context, args, /*write=*/true, -1, already));
}

Value Pread64(SyscallContext& context, const SyscallArgs& args) {
  auto offset = static_cast<int64_t>(args.arg[3]);
  if (offset < 0) return FailErrno(EINVAL, "pread offset");
  return BufferIo(context, args, /*write=*/false, offset);
}

Value Pwrite64(SyscallContext& context, const SyscallArgs& args) {
  auto offset = static_cast<int64_t>(args.arg[3]);
  if (offset < 0) return FailErrno(EINVAL, "pwrite offset");
  return BufferIo(context, args, /*write=*/true, offset);
}

// sendfile(out_fd, in_fd, offset, count): one read into a VMM buffer and one write, so every
// kind of fd works as read and write do (pipes park, EPIPE raises SIGPIPE). A guest that waits
// on a full output pipe parks before anything is read; bytes read but not written are given
// back to a seekable input (its offset, or *offset), and at most a pipe's atomic size is read
// from an input that cannot seek, which a writable output pipe always takes.
Value Sendfile(SyscallContext& context, const SyscallArgs& args) {
  constexpr uint64_t kChunk = 128 << 10;
  constexpr uint64_t kUnseekableChunk = 4096;  // PIPE_BUF
  OpenFile* out = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  OpenFile* in = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[1])));
  const uint64_t offset_addr = args.arg[2];
  int64_t offset = -1;
  if (offset_addr != 0) {
    offset = FLURRY_TRY(context.memory.ReadObject<int64_t>(offset_addr));
    if (offset < 0) return FailErrno(EINVAL, "sendfile offset");
  }
  if ((out->flags & O_ACCMODE) == O_RDONLY || (in->flags & O_ACCMODE) == O_WRONLY) {
    return FailErrno(EBADF, "sendfile");
  }
  if (args.arg[3] == 0) return 0;
  // Nothing is read before the output can take something: a full pipe parks a blocking
  // writer and is EAGAIN for a non-blocking one. (Another process may still fill a shared
  // pipe in between: at most PIPE_BUF bytes of an unseekable input are read, which a
  // writable pipe takes unless that happens.)
  if (out->kind == FileKind::kPipe || out->kind == FileKind::kStdio) {
    pollfd ready{out->host_fd(), POLLOUT, 0};
    if (poll(&ready, 1, 0) == 0) {
      if (GuestWaitsOn(*out)) return ParkOnFd(context, *out, POLLOUT);
      return FailErrno(EAGAIN, "sendfile");
    }
  }
  const bool seekable = offset >= 0 || lseek(in->host_fd(), 0, SEEK_CUR) >= 0;
  std::vector<uint8_t> buffer(std::min(args.arg[3], seekable ? kChunk : kUnseekableChunk));
  iovec iov{buffer.data(), buffer.size()};
  const int64_t got = FLURRY_TRY(ReadInto(context, *in, {&iov, 1}, offset));
  if (context.state.threads.block || got == 0) return 0;  // parked on the input, or its end
  iov.iov_len = static_cast<size_t>(got);
  const Value put = WriteFrom(context, *out, {&iov, 1}, -1);
  const int64_t written = put ? *put : 0;
  if (offset >= 0) {
    FLURRY_TRY(context.memory.WriteObject(offset_addr, offset + written));
  } else if (written < got && seekable) {
    lseek(in->host_fd(), written - got, SEEK_CUR);
  }
  return put;
}

Value Readv(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  GuestIovecs io =
      FLURRY_TRY(IovecsArg(context.memory, args.arg[1], args.arg[2], GuestAccess::kWrite));
  const int64_t n = FLURRY_TRY(ReadInto(context, *file, io.iov, -1));
  if (n > 0) FLURRY_TRY(io.Store(static_cast<uint64_t>(n)));
  return n;
}

Value WritevFrom(SyscallContext& context, const SyscallArgs& args, uint64_t already) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  GuestIovecs io =
      FLURRY_TRY(IovecsArg(context.memory, args.arg[1], args.arg[2], GuestAccess::kRead));
  FLURRY_TRY(io.Load());
  std::span<iovec> rest(io.iov);
  SkipBytes(rest, already);
  return WriteFrom(context, *file, rest, -1, &args, already);
}

Value Writev(SyscallContext& context, const SyscallArgs& args) {
  const uint64_t already = ResumedBytes(context, args);
  return WithResumed(already, WritevFrom(context, args, already));
}

Value Lseek(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  off_t result =
      lseek(file->host_fd(), static_cast<off_t>(args.arg[1]), static_cast<int>(args.arg[2]));
  if (result < 0) return HostError("lseek");
  return result;
}

Value Getdents64(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  if (file->kind != FileKind::kDirectory) return FailErrno(ENOTDIR, "getdents64");
  uint64_t count = static_cast<uint32_t>(args.arg[2]);
  count = std::min(count, kMaxDirents);
  GuestWindow window = FLURRY_TRY(context.memory.Window(args.arg[1], count, GuestAccess::kWrite));
  long n = syscall(SYS_getdents64, file->host_fd(), window.bytes().data(), count);
  if (n < 0) return HostError("getdents64");
  FLURRY_TRY(window.Store(static_cast<uint64_t>(n)));
  return n;
}

// ---- Opening and closing -----------------------------------------------------------------

Value OpenAt(SyscallContext& context, int dirfd, uint64_t path_addr, int flags, mode_t mode) {
  std::string path = FLURRY_TRY(PathArg(context.memory, path_addr));
  if (const std::optional<DevicePath> device = DeviceArg(context, dirfd, path)) {
    return OpenDevice(context, *device, flags);
  }
  PathRef ref = FLURRY_TRY(PathRefOf(context, dirfd, std::move(path)));
  FdTable& fds = context.state.fds;
  // Like Linux, take the fd slot before touching the file system (no file created on EMFILE).
  if (fds.OpenCount() >= FdTable::kMaxFds) return FailErrno(EMFILE, "guest fd table full");
  UniqueFd fd = FLURRY_TRY(ref.dir->OpenAt(ref.base, ref.path, flags, mode));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return HostError("fstat");
  OpenFile file;
  file.kind = S_ISREG(st.st_mode)   ? FileKind::kRegular
              : S_ISDIR(st.st_mode) ? FileKind::kDirectory
                                    : FileKind::kOther;
  file.path = ref.dir->GuestPathOf(fd.get(), HostDir::JoinGuestPath(ref.base.path, ref.path));
  // What F_GETFL reports: the open flags without the open-time-only ones.
  file.flags =
      (flags & HostDir::kGuestOpenFlags & ~(O_CLOEXEC | O_CREAT | O_EXCL | O_NOCTTY | O_TRUNC)) |
      HostDir::kKernelLargefile;
  file.host = std::move(fd);
  return FLURRY_TRY(fds.Install(std::move(file), (flags & O_CLOEXEC) != 0));
}

Value Openat(SyscallContext& context, const SyscallArgs& args) {
  return OpenAt(context, IntArg(args.arg[0]), args.arg[1], IntArg(args.arg[2]),
                static_cast<mode_t>(args.arg[3]));
}

Value Open(SyscallContext& context, const SyscallArgs& args) {
  return OpenAt(context, AT_FDCWD, args.arg[0], IntArg(args.arg[1]),
                static_cast<mode_t>(args.arg[2]));
}

Value Close(SyscallContext& context, const SyscallArgs& args) {
  FLURRY_TRY(context.state.fds.Close(IntArg(args.arg[0])));
  return 0;
}

Value CloseRange(SyscallContext& context, const SyscallArgs& args) {
  auto first = static_cast<uint32_t>(args.arg[0]);
  auto last = static_cast<uint32_t>(args.arg[1]);
  auto flags = static_cast<uint32_t>(args.arg[2]);
  if ((flags & ~(CLOSE_RANGE_UNSHARE | CLOSE_RANGE_CLOEXEC)) != 0 || first > last) {
    return FailErrno(EINVAL, "close_range");
  }
  context.state.fds.CloseRange(first, last, (flags & CLOSE_RANGE_CLOEXEC) != 0);
  return 0;
}

Value Dup(SyscallContext& context, const SyscallArgs& args) {
  return FLURRY_TRY(context.state.fds.Dup(IntArg(args.arg[0]), 0, false));
}

Value Dup2(SyscallContext& context, const SyscallArgs& args) {
  return FLURRY_TRY(context.state.fds.DupTo(IntArg(args.arg[0]), IntArg(args.arg[1]), false));
}

Value Dup3(SyscallContext& context, const SyscallArgs& args) {
  int flags = IntArg(args.arg[2]);
  if ((flags & ~O_CLOEXEC) != 0 || IntArg(args.arg[0]) == IntArg(args.arg[1])) {
    return FailErrno(EINVAL, "dup3");
  }
  return FLURRY_TRY(
      context.state.fds.DupTo(IntArg(args.arg[0]), IntArg(args.arg[1]), (flags & O_CLOEXEC) != 0));
}

Value Fcntl(SyscallContext& context, const SyscallArgs& args) {
  FdTable& fds = context.state.fds;
  int fd = IntArg(args.arg[0]);
  int arg = IntArg(args.arg[2]);
  OpenFile* file = FLURRY_TRY(fds.Get(fd));
  switch (IntArg(args.arg[1])) {
    case F_DUPFD:
    case F_DUPFD_CLOEXEC:
      if (arg < 0 || arg >= FdTable::kMaxFds) return FailErrno(EINVAL, "F_DUPFD");
      return FLURRY_TRY(fds.Dup(fd, arg, IntArg(args.arg[1]) == F_DUPFD_CLOEXEC));
    case F_GETFD:
      return FLURRY_TRY(fds.GetCloexec(fd)) ? FD_CLOEXEC : 0;
    case F_SETFD:
      FLURRY_TRY(fds.SetCloexec(fd, (arg & FD_CLOEXEC) != 0));
      return 0;
    case F_GETFL: {
      int flags = file->flags;
      if (file->kind == FileKind::kStdio) {  // the access mode the host stdio really has
        int host = fcntl(file->host_fd(), F_GETFL);
        if (host >= 0) flags = (flags & ~O_ACCMODE) | (host & O_ACCMODE);
      }
      return flags;
    }
    case F_SETFL: {
      // Borrowed stdio keeps its host flags (they are shared with the host's terminal); a
      // pipe's (eventfd's, ...) host fd stays non-blocking (the guest's O_NONBLOCK decides
      // whether it waits).
      if (file->kind != FileKind::kStdio && !HostFdNonblocking(file->kind)) {
        int host = fcntl(file->host_fd(), F_GETFL);
        if (host < 0) return HostError("F_GETFL");
        if (fcntl(file->host_fd(), F_SETFL, (host & ~kSetflFlags) | (arg & kSetflFlags)) != 0) {
          return HostError("F_SETFL");
        }
      }
      file->flags = (file->flags & ~kSetflFlags) | (arg & kSetflFlags);
      return 0;
    }
    default:
      return FailErrno(EINVAL, "fcntl command");
  }
}

Value Ioctl(SyscallContext& context, const SyscallArgs& args) {
  int fd = IntArg(args.arg[0]);
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(fd));
  auto request = static_cast<uint32_t>(args.arg[1]);
  switch (request) {
    case FIOCLEX:
    case FIONCLEX:
      FLURRY_TRY(context.state.fds.SetCloexec(fd, request == FIOCLEX));
      return 0;
    case FIONREAD: {
      // The bytes a pipe (or the borrowed stdio) holds, as the host counts them.
      if (file->kind != FileKind::kPipe && file->kind != FileKind::kStdio) {
        return FailErrno(ENOTTY, "ioctl");
      }
      int bytes = 0;
      if (ioctl(file->host_fd(), FIONREAD, &bytes) != 0) return HostError("ioctl");
      FLURRY_TRY(context.memory.WriteObject(args.arg[2], bytes));
      return 0;
    }
    case TCGETS:
    case TIOCGWINSZ: {
      // Only the borrowed host stdio can be a terminal.
      if (file->kind != FileKind::kStdio) return FailErrno(ENOTTY, "ioctl");
      alignas(8) uint8_t answer[64] = {};
      if (ioctl(file->host_fd(), request, answer) != 0) return HostError("ioctl");
      size_t size = request == TCGETS ? kKernelTermiosSize : sizeof(winsize);
      FLURRY_TRY(context.memory.Write(args.arg[2], answer, size));
      return 0;
    }
    default:
      return FailErrno(ENOTTY, "ioctl");
  }
}

// ---- Metadata ----------------------------------------------------------------------------

Value Fstat(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  struct stat st {};
  if (fstat(file->host_fd(), &st) != 0) return HostError("fstat");
  FLURRY_TRY(context.memory.WriteObject(args.arg[1], st));
  return 0;
}

Value Ftruncate(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  auto length = static_cast<off_t>(args.arg[1]);
  if (length < 0) return FailErrno(EINVAL, "ftruncate length");
  if (ftruncate(file->host_fd(), length) != 0) return HostError("ftruncate");
  return 0;
}

Value Fsync(SyscallContext& context, const SyscallArgs& args) {
  OpenFile* file = FLURRY_TRY(context.state.fds.Get(IntArg(args.arg[0])));
  int rc = args.nr == SYS_fdatasync ? fdatasync(file->host_fd()) : fsync(file->host_fd());
  if (rc != 0) return HostError("fsync");
  return 0;
}

}  // namespace
}  // namespace file_syscalls

using namespace file_syscalls;

void RegisterFileSyscalls(SyscallTable& table) {
  table.Register(SYS_read, Handle<Read>);
  table.Register(SYS_write, Handle<Write>);
  table.Register(SYS_readv, Handle<Readv>);
  table.Register(SYS_writev, Handle<Writev>);
  table.Register(SYS_sendfile, Handle<Sendfile>);
  table.Register(SYS_pread64, Handle<Pread64>);
  table.Register(SYS_pwrite64, Handle<Pwrite64>);
  table.Register(SYS_lseek, Handle<Lseek>);
  table.Register(SYS_getdents64, Handle<Getdents64>);
  table.Register(SYS_open, Handle<Open>);
  table.Register(SYS_openat, Handle<Openat>);
  table.Register(SYS_close, Handle<Close>);
  table.Register(SYS_close_range, Handle<CloseRange>);
  table.Register(SYS_dup, Handle<Dup>);
  table.Register(SYS_dup2, Handle<Dup2>);
  table.Register(SYS_dup3, Handle<Dup3>);
  table.Register(SYS_fcntl, Handle<Fcntl>);
  table.Register(SYS_ioctl, Handle<Ioctl>);
  table.Register(SYS_fstat, Handle<Fstat>);
  table.Register(SYS_ftruncate, Handle<Ftruncate>);
  table.Register(SYS_fsync, Handle<Fsync>);
  table.Register(SYS_fdatasync, Handle<Fsync>);
  RegisterPathSyscalls(table);
  RegisterPipeSyscalls(table);
  RegisterEventSyscalls(table);
  RegisterEpollSyscalls(table);
}

}  // namespace flurry
