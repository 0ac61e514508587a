// The parts of the descriptor protobuf that describe the guest's files and its processes:
// FdRecord kinds, event objects, pipes, and the process table (format version 3). Internal to
// the descriptor codec (descriptor_proto.h).
#include "snapshot/descriptor_checks.h"
#include "snapshot/descriptor_proto.h"

namespace flurry::descriptor_internal {

namespace pb = ::flurry::descriptor::v2;

namespace {

void PipeToProto(const PipeRecord& pipe, pb::Pipe* out) {
  out->set_id(pipe.id);
  out->set_capacity(pipe.capacity);
  out->set_contents(pipe.contents.data(), pipe.contents.size());
}

pb::FileKind KindToProto(FileKind kind) {
  switch (kind) {
    case FileKind::kStdio:
      return pb::FILE_KIND_STDIO;
    case FileKind::kRegular:
      return pb::FILE_KIND_REGULAR;
    case FileKind::kDirectory:
      return pb::FILE_KIND_DIRECTORY;
    case FileKind::kOther:
      return pb::FILE_KIND_OTHER;
    case FileKind::kPipe:
      return pb::FILE_KIND_PIPE;
    case FileKind::kEventfd:
      return pb::FILE_KIND_EVENTFD;
    case FileKind::kTimerfd:
      return pb::FILE_KIND_TIMERFD;
    case FileKind::kEpoll:
      return pb::FILE_KIND_EPOLL;
    case FileKind::kDevice:
      return pb::FILE_KIND_DEVICE;
    case FileKind::kSignalfd:
      return pb::FILE_KIND_SIGNALFD;
  }
  return pb::FILE_KIND_UNSPECIFIED;  // an out-of-range enum value; the decoder refuses it
}

void EventToProto(const EventRecord& e, pb::EventObject* out) {
  out->set_count(e.count);
  out->set_semaphore(e.semaphore);
  out->set_clock(e.clock);
  out->set_deadline_ns(e.deadline_ns);
  out->set_interval_ns(e.interval_ns);
  out->set_signal_mask(e.signal_mask);
  for (const EpollInterestRecord& i : e.interests) {
    pb::EpollInterest* p = out->add_interests();
    p->set_fd(i.fd);
    p->set_events(i.events);
    p->set_data(i.data);
  }
}

Result<FileKind> KindFromProto(int kind, int32_t fd) {
  switch (kind) {
    case pb::FILE_KIND_STDIO:
      return FileKind::kStdio;
    case pb::FILE_KIND_REGULAR:
      return FileKind::kRegular;
    case pb::FILE_KIND_DIRECTORY:
      return FileKind::kDirectory;
    case pb::FILE_KIND_OTHER:
      return FileKind::kOther;
    case pb::FILE_KIND_PIPE:
      return FileKind::kPipe;
    case pb::FILE_KIND_EVENTFD:
      return FileKind::kEventfd;
    case pb::FILE_KIND_TIMERFD:
      return FileKind::kTimerfd;
    case pb::FILE_KIND_EPOLL:
      return FileKind::kEpoll;
    case pb::FILE_KIND_DEVICE:
      return FileKind::kDevice;
    case pb::FILE_KIND_SIGNALFD:
      return FileKind::kSignalfd;
    default:
      return Invalid("fd {} has unknown kind {}", fd, kind);
  }
}

Result<EventRecord> EventFromProto(const pb::EventObject& in, int32_t fd) {
  if (in.interests_size() > FdTable::kMaxFds) {
    return Invalid("fd {}: {} epoll interests, at most {} allowed", fd, in.interests_size(),
                   FdTable::kMaxFds);
  }
  EventRecord e;
  e.count = in.count();
  e.semaphore = in.semaphore();
  e.clock = in.clock();
  e.deadline_ns = in.deadline_ns();
  e.interval_ns = in.interval_ns();
  e.signal_mask = in.signal_mask();
  e.interests.reserve(static_cast<size_t>(in.interests_size()));
  for (const pb::EpollInterest& i : in.interests()) {
    e.interests.push_back({.fd = i.fd(), .events = i.events(), .data = i.data()});
  }
  return e;
}

Result<PipeRecord> PipeFromProto(const pb::Pipe& p) {
  if (p.contents().size() > PipeRecord::kMaxPipeCapacity) {
    return Invalid("pipe {} holds {} bytes, at most {} allowed", p.id(), p.contents().size(),
                   PipeRecord::kMaxPipeCapacity);
  }
  return PipeRecord{.id = p.id(),
                    .capacity = p.capacity(),
                    .contents = std::vector<uint8_t>(p.contents().begin(), p.contents().end())};
}

}  // namespace

void FilesToProto(const FilesRecord& files, pb::Files* out) {
  if (files.root_host_path) out->set_root_host_path(*files.root_host_path);
  out->set_root_writable(files.root_writable);
  out->set_cwd(files.cwd);
  for (const FdRecord& fd : files.fds) {
    pb::FileDescriptor* f = out->add_fds();
    f->set_fd(fd.fd);
    f->set_kind(KindToProto(fd.kind));
    f->set_stdio_fd(fd.stdio_fd);
    f->set_path(fd.path);
    f->set_flags(fd.flags);
    f->set_cloexec(fd.cloexec);
    f->set_offset(fd.offset);
    if (fd.event != EventRecord{}) EventToProto(fd.event, f->mutable_event());
    if (fd.shares_with >= 0) f->set_shares_with(fd.shares_with);
    if (fd.pipe != 0) f->set_pipe(fd.pipe);
  }
  for (const PipeRecord& pipe : files.pipes) PipeToProto(pipe, out->add_pipes());
}

void ProcessesToProto(const ProcessesRecord& processes, pb::GuestProcesses* out) {
  for (const ProcessRecord& r : processes.processes) {
    pb::GuestProcess* p = out->add_processes();
    p->set_pid(r.pid);
    p->set_ppid(r.ppid);
    p->set_pgid(r.pgid);
    p->set_sid(r.sid);
    p->set_zombie(r.zombie);
    p->set_wait_status(r.wait_status);
    p->set_signals(r.signals);
    p->set_sender(r.sender);
    p->set_exit_signal(r.exit_signal);
    p->set_no_zombies(r.no_zombies);
  }
  out->set_last_id(processes.last_id);
  for (const PipeRecord& pipe : processes.pipes) PipeToProto(pipe, out->add_pipes());
}

Result<FilesRecord> FilesFromProto(const pb::Files& in) {
  FilesRecord out;
  if (in.has_root_host_path()) out.root_host_path = in.root_host_path();
  out.root_writable = in.root_writable();
  out.cwd = in.cwd();
  if (in.fds_size() > FdTable::kMaxFds) {
    return Invalid("{} fds, at most {} allowed", in.fds_size(), FdTable::kMaxFds);
  }
  out.fds.reserve(in.fds_size());
  for (const pb::FileDescriptor& f : in.fds()) {
    FdRecord fd;
    fd.fd = f.fd();
    fd.kind = FLURRY_TRY(KindFromProto(f.kind(), f.fd()));
    fd.stdio_fd = f.stdio_fd();
    fd.path = f.path();
    fd.flags = f.flags();
    fd.cloexec = f.cloexec();
    fd.offset = f.offset();
    if (f.has_event()) fd.event = FLURRY_TRY(EventFromProto(f.event(), f.fd()));
    if (f.has_shares_with()) {
      if (f.shares_with() < 0) return Invalid("fd {} shares fd {}", f.fd(), f.shares_with());
      fd.shares_with = f.shares_with();
    }
    fd.pipe = f.pipe();
    out.fds.push_back(std::move(fd));
  }
  if (in.pipes_size() > FdTable::kMaxFds) {
    return Invalid("{} pipes, at most {} allowed", in.pipes_size(), FdTable::kMaxFds);
  }
  for (const pb::Pipe& p : in.pipes()) out.pipes.push_back(FLURRY_TRY(PipeFromProto(p)));
  return out;
}

Result<ProcessesRecord> ProcessesFromProto(const pb::GuestProcesses& in) {
  if (in.processes_size() > ProcessesRecord::kMaxProcesses) {
    return Invalid("{} processes, at most {} allowed", in.processes_size(),
                   ProcessesRecord::kMaxProcesses);
  }
  if (in.pipes_size() > FdTable::kMaxFds) {
    return Invalid("{} pipes of the VM's processes, at most {} allowed", in.pipes_size(),
                   FdTable::kMaxFds);
  }
  ProcessesRecord out;
  for (const pb::GuestProcess& p : in.processes()) {
    out.processes.push_back(ProcessRecord{.pid = p.pid(),
                                          .ppid = p.ppid(),
                                          .pgid = p.pgid(),
                                          .sid = p.sid(),
                                          .zombie = p.zombie(),
                                          .wait_status = p.wait_status(),
                                          .signals = p.signals(),
                                          .sender = p.sender(),
                                          .exit_signal = p.exit_signal(),
                                          .no_zombies = p.no_zombies()});
  }
  out.last_id = in.last_id();
  for (const pb::Pipe& p : in.pipes()) out.pipes.push_back(FLURRY_TRY(PipeFromProto(p)));
  return out;
}

}  // namespace flurry::descriptor_internal
