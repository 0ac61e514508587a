// FdTable: the guest's file descriptors, its root directory and its working directory.
//
// Plain data plus host fds, part of GuestState; one owner (the Vm), touched only by the vCPU
// thread. Guest fd numbers map to shared OpenFile objects (an open file description: dup'ed
// fds share one object, hence one host fd and one offset). Each OpenFile records its kind,
// guest path and open flags, so a VM clone can reopen it in another process.
//
// The default table has fds 0, 1, 2 = the host's stdin, stdout and stderr (never closed on the
// host) and no root directory: without one, every path lookup fails with ENOENT.
#pragma once

#include <sys/types.h>

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"
#include "guest/host_dir.h"
#include "guest/line_writer.h"

namespace flurry {

enum class FileKind : uint8_t {
  kStdio,      // the host's fd 0/1/2, borrowed
  kRegular,    // a regular file inside the root
  kDirectory,  // a directory inside the root (usable as a dirfd)
  kOther,      // anything else opened inside the root (symlink via O_PATH, fifo, device)
  kPipe,       // one end of a pipe made by pipe/pipe2: no path (a VM descriptor records
               // which pipe, and the pipe's unread bytes)
  kEventfd,    // eventfd/eventfd2: a host eventfd
  kTimerfd,    // timerfd_create: a host timerfd
  kEpoll,      // epoll_create/epoll_create1: a host epoll instance
  kDevice,     // /dev/null, /dev/zero, ... (guest/dev_files.h): the host's device, by path
  kSignalfd,   // signalfd/signalfd4: a host eventfd the VMM makes readable while a signal of
               // its mask is pending (guest/signalfd.h); reads take the signals
};

// Kinds whose host fd is always O_NONBLOCK: the guest's O_NONBLOCK lives in OpenFile::flags
// only and decides whether a thread that finds the host fd not ready parks or gets EAGAIN.
inline bool HostFdNonblocking(FileKind kind) {
  return kind == FileKind::kPipe || kind == FileKind::kEventfd || kind == FileKind::kTimerfd ||
         kind == FileKind::kEpoll || kind == FileKind::kSignalfd;
}

// The kinds made by eventfd, timerfd_create, epoll_create and signalfd (OpenFile::event).
inline bool IsEventObject(FileKind kind) {
  return kind == FileKind::kEventfd || kind == FileKind::kTimerfd || kind == FileKind::kEpoll ||
         kind == FileKind::kSignalfd;
}

struct OpenFile;

// One fd in an epoll instance's interest list, as the guest registered it.
struct EpollInterest {
  int32_t fd = -1;      // the guest fd it was added as
  uint32_t events = 0;  // epoll_ctl's events
  uint64_t data = 0;    // epoll_ctl's data, returned as is by epoll_wait
  // The open file it was added as: a descriptor records the interest only while the guest
  // fd still refers to it (the host drops it when the file closes).
  std::weak_ptr<const OpenFile> file;
};

// What makes an eventfd, timerfd, epoll instance or signalfd again elsewhere (a VM
// descriptor). The rest of their state (an eventfd's count, a timerfd's setting) is read from
// the host fd when a descriptor is captured.
struct EventObject {
  bool semaphore = false;                // eventfd: EFD_SEMAPHORE
  int32_t clock = 0;                     // timerfd: its clockid
  std::vector<EpollInterest> interests;  // epoll: by guest fd, in the order added
  uint64_t signal_mask = 0;              // signalfd: the signals it reads (bit signal - 1)
  // signalfd: the signals of its mask pending when it was last synced (guest/signalfd.h), its
  // host eventfd readable while not 0. Written by the run thread only (SyncSignalfds, reads,
  // RenewSignalfds). Not captured: a restored signalfd starts unreadable and is synced at the
  // VM's first stop.
  uint64_t signal_ready = 0;
};

// One open file description.
struct OpenFile {
  FileKind kind = FileKind::kOther;
  int stdio_fd = -1;  // kStdio: the host fd number (0, 1 or 2); not owned
  UniqueFd host;      // other kinds: the host fd, owned (always O_CLOEXEC on the host;
                      // O_NONBLOCK too where HostFdNonblocking, whatever the guest asked for)
  std::string path;   // absolute guest path it was opened as (canonical); empty for kStdio,
                      // kPipe and the event kinds
  int flags = 0;      // the guest's open(2) flags as F_GETFL reports them (no O_CLOEXEC);
                      // O_NONBLOCK here decides whether the guest waits on stdio or a kind
                      // whose host fd is non-blocking (HostFdNonblocking)

  // kStdio in a clone: writes go out whole lines at a time (see line_writer.h).
  std::shared_ptr<LineWriter> line_writer;
  EventObject event;  // kEventfd, kTimerfd, kEpoll, kSignalfd

  int host_fd() const { return kind == FileKind::kStdio ? stdio_fd : host.get(); }
};

class FdTable {
 public:
  static constexpr int kMaxFds = 1024;  // RLIMIT_NOFILE as the guest sees it

  // One slot per guest fd number; a free slot has no file.
  struct Entry {
    std::shared_ptr<OpenFile> file;
    bool cloexec = false;  // FD_CLOEXEC: execve closes it
  };

  FdTable();  // fds 0, 1, 2 = host stdio; no root
  FdTable(FdTable&&) noexcept = default;
  FdTable& operator=(FdTable&&) noexcept = default;
  FdTable(const FdTable&) = delete;
  FdTable& operator=(const FdTable&) = delete;

  // The guest's root ("--dir"); resets the working directory to "/".
  void SetRoot(HostDir dir);
  HostDir* root() { return root_ ? &*root_ : nullptr; }
  const HostDir* root() const { return root_ ? &*root_ : nullptr; }

  // The working directory: where relative paths with AT_FDCWD start.
  HostDir::Base cwd() const { return {cwd_fd_.valid() ? cwd_fd_.get() : -1, cwd_path_}; }
  const std::string& cwd_path() const { return cwd_path_; }
  // `fd`: an O_PATH fd of the directory inside the root (invalid for the root itself).
  void SetCwd(UniqueFd fd, std::string guest_path);

  // Puts `file` at the lowest free fd >= min_fd. EMFILE when none is free, EINVAL when
  // min_fd is out of range.
  Result<int> Install(std::shared_ptr<OpenFile> file, bool cloexec, int min_fd = 0);
  Result<int> Install(OpenFile file, bool cloexec) {
    return Install(std::make_shared<OpenFile>(std::move(file)), cloexec);
  }

  // The open file behind fd, or EBADF.
  Result<OpenFile*> Get(int fd) const;
  bool IsOpen(int fd) const;

  // close(2): EBADF if not open. The host fd closes with the last guest fd sharing it.
  Result<void> Close(int fd);
  // F_DUPFD / dup(2): a new fd >= min_fd sharing fd's file.
  Result<int> Dup(int fd, int min_fd, bool cloexec);
  // dup2(2)/dup3(2): makes newfd share oldfd's file, closing what newfd held. EBADF if oldfd
  // is not open or newfd is out of range. oldfd == newfd is returned unchanged.
  Result<int> DupTo(int oldfd, int newfd, bool cloexec);

  // Restoring a table: puts `file` at exactly `fd` (replacing what was there).
  Result<void> InstallAt(int fd, std::shared_ptr<OpenFile> file, bool cloexec);
  // Closes every fd (stdio included) — the start of a restore.
  void Clear() {
    entries_.clear();
    signalfds_.clear();
  }

  // Routes stdout/stderr through LineWriters holding `lock` (the clone family's output lock):
  // in a clone (`line_buffered`) whole lines with `prefix` in front, else unchanged writes.
  void ShareOutput(pthread_mutex_t* lock, bool line_buffered, const std::string& prefix);
  // Writes out partial lines (at exit).
  void FlushLineOutput();

  Result<bool> GetCloexec(int fd) const;
  Result<void> SetCloexec(int fd, bool cloexec);

  // close_range(2) on [first, last]: closes, or with cloexec_only sets FD_CLOEXEC.
  void CloseRange(unsigned first, unsigned last, bool cloexec_only);

  // execve: closes every fd marked close-on-exec.
  void CloseOnExec();
  // Closes every pipe end (a snapshot process holds none: its pipes would not see EOF).
  void ClosePipes();

  int OpenCount() const;
  // The open signalfds, each once whatever fds share it (SyncSignalfds walks them at every
  // stop: not the whole table); one whose last fd has closed has expired and is dropped then.
  std::vector<std::weak_ptr<OpenFile>>& signalfds() { return signalfds_; }
  // Index = guest fd (for serialisation).
  const std::vector<Entry>& entries() const { return entries_; }

 private:
  // Adds `file` to signalfds_ if it is a signalfd not there yet.
  void NoteSignalfd(const std::shared_ptr<OpenFile>& file);

  std::vector<Entry> entries_;  // grows to the highest fd in use + 1
  std::optional<HostDir> root_;
  std::vector<std::weak_ptr<OpenFile>> signalfds_;
  UniqueFd cwd_fd_;             // invalid: cwd is the root
  std::string cwd_path_ = "/";  // guest path of the cwd
};

}  // namespace flurry
