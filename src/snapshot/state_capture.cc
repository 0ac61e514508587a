#include "snapshot/state_capture.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <map>
#include <vector>

#include "arch/x86_64/layout.h"
#include "base/check.h"
#include "guest/dev_files.h"
#include "snapshot/event_objects.h"
#include "snapshot/pipe_contents.h"

namespace flurry {

uint64_t PageMapRecord::PresentPages() const {
  uint64_t total = 0;
  for (const Run& run : present) total += run.page_count;
  return total;
}

Result<PageMapRecord> CapturePageMap(const GuestMemory& memory) {
  // Only user memory: the system area below kUserBase belongs to the backend, which rebuilds
  // it (and the vDSO) in every VM.
  const std::vector<bool> populated = FLURRY_TRY(memory.PopulatedPages());
  const uint64_t pages = populated.size();
  PageMapRecord map;
  for (uint64_t page = x86::kUserBase / x86::kPageSize; page < pages;) {
    if (!populated[page]) {
      ++page;
      continue;
    }
    uint64_t first = page;
    while (page < pages && populated[page]) ++page;
    map.present.push_back({first, page - first});
  }
  return map;
}

Result<FilesRecord> CaptureFiles(const FdTable& fds, int64_t monotonic_offset_ns, bool pipe_bytes) {
  FilesRecord record;
  if (const HostDir* root = fds.root()) {
    record.root_host_path = root->host_path();
    record.root_writable = root->writable();
  }
  record.cwd = fds.cwd_path();
  const auto& entries = fds.entries();
  std::map<const OpenFile*, int32_t> first_fd;  // each open file's lowest fd
  for (size_t fd = 0; fd < entries.size(); ++fd) {
    const auto& entry = entries[fd];
    if (entry.file == nullptr) continue;
    FdRecord r;
    r.fd = static_cast<int32_t>(fd);
    if (const auto [it, first] = first_fd.emplace(entry.file.get(), r.fd); !first) {
      r.shares_with = it->second;
    }
    r.kind = entry.file->kind;
    r.stdio_fd = entry.file->stdio_fd;
    r.path = entry.file->path;
    r.flags = entry.file->flags;
    r.cloexec = entry.cloexec;
    if (r.kind == FileKind::kRegular || r.kind == FileKind::kDirectory) {
      off_t offset = lseek(entry.file->host_fd(), 0, SEEK_CUR);
      r.offset = offset < 0 ? 0 : offset;
    }
    if (IsEventObject(r.kind) && r.shares_with < 0) {
      r.event = CaptureEventObject(*entry.file, fds, monotonic_offset_ns);
    }
    if (r.kind == FileKind::kPipe) {
      // Both ends (in every process of the VM) name the pipe by its host inode; its bytes
      // are recorded once.
      r.pipe = FLURRY_TRY_CTX(HostPipeId(entry.file->host_fd()),
                              fmt::format("capturing guest fd {} (a pipe)", fd));
      const bool recorded = std::any_of(record.pipes.begin(), record.pipes.end(),
                                        [&](const PipeRecord& p) { return p.id == r.pipe; });
      if (!recorded && pipe_bytes) {
        record.pipes.push_back(FLURRY_TRY_CTX(CapturePipe(entry.file->host_fd(), r.pipe),
                                              fmt::format("capturing guest fd {} (a pipe)", fd)));
      } else if (!recorded) {
        const int capacity = fcntl(entry.file->host_fd(), F_GETPIPE_SZ);
        record.pipes.push_back(
            PipeRecord{.id = r.pipe,
                       .capacity = static_cast<uint32_t>(std::max(capacity, 4096)),
                       .contents = {}});
      }
    }
    record.fds.push_back(std::move(r));
  }
  return record;
}

namespace {

// The pipes of a descriptor as they are restored: one new host pipe per PipeRecord, made when
// its first end is, holding the recorded bytes. An end no fd names is closed when the restore
// is done (reads then see end of file, writes fail with EPIPE and raise SIGPIPE, as for the
// guest's pipe). A pipe end recorded without its pipe (pipe 0, older descriptors) gets a pipe
// of its own, without a peer. Non-blocking on the host, as every pipe end
// (guest/syscalls_pipe.cc).
class RestoredPipes {
 public:
  RestoredPipes(const std::vector<PipeRecord>& records, const PipeSet* given)
      : records_(records), given_(given) {}

  Result<UniqueFd> End(const FdRecord& fd) {
    const bool write_end = (fd.flags & O_ACCMODE) == O_WRONLY;
    const bool packet_mode = (fd.flags & O_DIRECT) != 0;
    if (fd.pipe == 0) {
      PipeEnds peerless =
          FLURRY_TRY(MakePipe(PipeRecord{.id = 0, .capacity = 4096, .contents = {}}, packet_mode));
      return write_end ? std::move(peerless.write) : std::move(peerless.read);
    }
    // The pipes made already (a clone of a VM of several processes), or made here as their
    // first end is restored.
    const PipeEnds* pipe = nullptr;
    if (given_ != nullptr) {
      const auto it = given_->find(fd.pipe);
      if (it == given_->end()) return Fail("pipe {} was not made", fd.pipe);
      pipe = &it->second;
    } else if (const auto it = made_.find(fd.pipe); it != made_.end()) {
      pipe = &it->second;
    } else {
      const auto record = std::find_if(records_.begin(), records_.end(),
                                       [&](const PipeRecord& p) { return p.id == fd.pipe; });
      if (record == records_.end()) return Fail("pipe {} is not recorded", fd.pipe);
      pipe = &made_.emplace(fd.pipe, FLURRY_TRY(MakePipe(*record, packet_mode))).first->second;
    }
    UniqueFd copy(fcntl(write_end ? pipe->write.get() : pipe->read.get(), F_DUPFD_CLOEXEC, 0));
    if (!copy.valid()) return FailErrno("duplicating a pipe end");
    return copy;
  }

 private:
  const std::vector<PipeRecord>& records_;
  const PipeSet* given_;
  PipeSet made_;
};

}  // namespace

Result<void> RestoreFiles(const FilesRecord& record, const std::optional<std::string>& root_path,
                          FdTable& fds, std::shared_ptr<LazyFiles> lazy_files,
                          int64_t monotonic_offset_ns, const PipeSet* given_pipes) {
  FdTable restored;
  restored.Clear();
  if (root_path) {
    HostDir root = FLURRY_TRY(HostDir::Open(*root_path, record.root_writable));
    if (lazy_files) root.AttachLazyFiles(std::move(lazy_files));
    restored.SetRoot(std::move(root));
  }
  RestoredPipes pipes(record.pipes, given_pipes);
  for (const FdRecord& r : record.fds) {
    if (r.shares_with >= 0) {  // one open file with a lower fd (validated: restored before)
      auto shared = restored.entries().size() > static_cast<size_t>(r.shares_with)
                        ? restored.entries()[static_cast<size_t>(r.shares_with)].file
                        : nullptr;
      if (shared == nullptr)
        return Fail("fd {} shares fd {}, which is not open", r.fd, r.shares_with);
      FLURRY_TRY(restored.InstallAt(r.fd, std::move(shared), r.cloexec));
      continue;
    }
    auto file = std::make_shared<OpenFile>();
    file->kind = r.kind;
    file->flags = r.flags;
    file->path = r.path;
    if (r.kind == FileKind::kStdio) {
      if (r.stdio_fd < 0 || r.stdio_fd > 2) return Fail("fd {}: bad stdio fd {}", r.fd, r.stdio_fd);
      file->stdio_fd = r.stdio_fd;
    } else if (r.kind == FileKind::kPipe) {
      file->host =
          FLURRY_TRY_CTX(pipes.End(r), fmt::format("restoring guest fd {} (a pipe)", r.fd));
    } else if (r.kind == FileKind::kDevice) {
      file->host = FLURRY_TRY_CTX(OpenHostDevice(r.path, r.flags),
                                  fmt::format("reopening guest fd {} ({})", r.fd, r.path));
    } else if (IsEventObject(r.kind)) {
      file->host = FLURRY_TRY_CTX(MakeEventObject(r.kind, r.event, monotonic_offset_ns),
                                  fmt::format("restoring guest fd {}", r.fd));
      file->event.semaphore = r.event.semaphore;
      file->event.clock = r.event.clock;
      file->event.signal_mask = r.event.signal_mask;
    } else {
      HostDir* root = restored.root();
      if (root == nullptr) return Fail("fd {} ({}) needs a --dir root", r.fd, r.path);
      // Reopen without the flags that would change the file again.
      const int flags =
          (r.flags & ~(O_CREAT | O_EXCL | O_TRUNC)) | (r.kind == FileKind::kOther ? O_PATH : 0);
      file->host = FLURRY_TRY_CTX(root->OpenAt(r.path, flags, 0),
                                  fmt::format("reopening guest fd {} ({})", r.fd, r.path));
      if (r.offset != 0 && lseek(file->host.get(), r.offset, SEEK_SET) < 0) {
        return FailErrno(fmt::format("restoring the offset of guest fd {}", r.fd));
      }
    }
    FLURRY_TRY(restored.InstallAt(r.fd, std::move(file), r.cloexec));
  }
  // Epoll instances watch fds of the table: once every one is open.
  for (const FdRecord& r : record.fds) {
    if (r.kind != FileKind::kEpoll || r.shares_with >= 0) continue;
    OpenFile* epoll = FLURRY_TRY(restored.Get(r.fd));
    FLURRY_TRY_CTX(RestoreEpollInterests(*epoll, r.event, restored),
                   fmt::format("restoring guest fd {} (an epoll instance)", r.fd));
  }
  if (record.cwd != "/" && restored.root() != nullptr) {
    auto cwd = restored.root()->OpenAt(record.cwd, O_PATH | O_DIRECTORY, 0);
    if (cwd) restored.SetCwd(std::move(*cwd), record.cwd);
  }
  fds = std::move(restored);
  return {};
}

Result<VmDescriptor> CaptureGuest(const GuestState& state, const GuestMemory& memory) {
  VmDescriptor d = FLURRY_TRY(CaptureGuestState(state));
  d.pages = FLURRY_TRY(CapturePageMap(memory));
  return d;
}

namespace {

ThreadRecord RecordOf(const GuestThread& thread) {
  return ThreadRecord{.tid = thread.tid,
                      .cpu = CapturedCpu(thread),
                      .clear_child_tid = thread.clear_child_tid,
                      .robust_list = thread.robust_list,
                      .robust_list_len = thread.robust_list_len,
                      .blocked = thread.blocked,
                      .thread_pending = thread.thread_pending,
                      .altstack = thread.altstack};
}

GuestThread ThreadOf(const ThreadRecord& record) {
  GuestThread thread;
  thread.tid = record.tid;
  thread.cpu = record.cpu;
  thread.clear_child_tid = record.clear_child_tid;
  thread.robust_list = record.robust_list;
  thread.robust_list_len = record.robust_list_len;
  thread.blocked = record.blocked;
  thread.thread_pending = record.thread_pending;
  thread.altstack = record.altstack;
  return thread;
}

}  // namespace

Result<VmDescriptor> CaptureGuestState(const GuestState& state) {
  VmDescriptor d = CaptureGuestStateExceptFiles(state);
  d.files = FLURRY_TRY(CaptureFiles(state.fds, state.monotonic_offset_ns));
  return d;
}

VmDescriptor CaptureGuestStateExceptFiles(const GuestState& state) {
  VmDescriptor d;
  d.cpu = state.cpu;
  d.identity = state.identity;
  const MemoryMap& map = state.memory_map;
  d.memory.ram_size = map.ram_size();
  d.memory.image_start = map.image_start();
  d.memory.image_end = map.image_end();
  d.memory.brk_start = map.brk_start();
  d.memory.brk = map.brk();
  d.memory.mmap_top = map.mmap_top();
  d.memory.stack_bottom = map.stack_bottom();
  d.memory.regions = map.regions();
  d.memory.protections = map.protections().spans();
  d.signals = state.signals;
  d.start_time_ns = state.start_time_ns;
  d.clock = CaptureClockNow(state.monotonic_offset_ns);
  for (const GuestThread& thread : state.threads.others) {
    FLURRY_CHECK(thread.lane < 0);  // the VMM stops every lane before it captures
    d.threads.push_back(RecordOf(thread));
  }
  d.last_tid = state.threads.last_tid;
  return d;
}

int64_t RestoredMonotonicOffset(const VmDescriptor& d, ClockResume how) {
  if (!d.clock) return 0;
  return RestoredOffsetNs(*d.clock, how, HostClockNs(CLOCK_MONOTONIC), HostClockNs(CLOCK_REALTIME));
}

Result<GuestState> RestoreGuest(const VmDescriptor& d, ClockResume clock,
                                const std::optional<std::string>& root_override,
                                std::shared_ptr<LazyFiles> lazy_files, const PipeSet* pipes,
                                std::optional<int64_t> monotonic_offset_ns) {
  GuestState state;
  state.cpu = d.cpu;
  state.identity = d.identity;
  // The bases are part of the vCPU state the backend restores: nothing left to apply.
  state.segment_bases =
      SegmentBases{.fs_base = d.vcpu.regs.fs_base, .gs_base = d.vcpu.regs.gs_base, .dirty = false};
  state.memory_map = MemoryMap(d.memory.image_start, d.memory.image_end, d.memory.mmap_top,
                               d.memory.stack_bottom, d.memory.ram_size);
  state.memory_map.RestoreDynamicState(d.memory.brk, d.memory.regions, d.memory.protections);
  state.signals = d.signals;
  for (const ThreadRecord& record : d.threads) state.threads.others.push_back(ThreadOf(record));
  state.threads.last_tid = d.last_tid;
  state.start_time_ns = d.start_time_ns;
  state.monotonic_offset_ns = monotonic_offset_ns.value_or(RestoredMonotonicOffset(d, clock));
  FLURRY_TRY_CTX(RestoreFiles(d.files, root_override ? root_override : d.files.root_host_path,
                              state.fds, std::move(lazy_files), state.monotonic_offset_ns, pipes),
                 "restoring the guest's files");
  return state;
}

}  // namespace flurry
