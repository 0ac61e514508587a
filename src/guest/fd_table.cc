#include "guest/fd_table.h"

#include <fcntl.h>

namespace flurry {

FdTable::FdTable() {
  static constexpr int kStdioFlags[] = {O_RDONLY, O_WRONLY, O_WRONLY};
  for (int fd = 0; fd < 3; ++fd) {
    OpenFile file;
    file.kind = FileKind::kStdio;
    file.stdio_fd = fd;
    file.flags = kStdioFlags[fd];
    entries_.push_back({std::make_shared<OpenFile>(std::move(file)), false});
  }
}

void FdTable::SetRoot(HostDir dir) {
  root_.emplace(std::move(dir));
  SetCwd(UniqueFd(), "/");
}

void FdTable::SetCwd(UniqueFd fd, std::string guest_path) {
  cwd_fd_ = std::move(fd);
  cwd_path_ = std::move(guest_path);
}

Result<int> FdTable::Install(std::shared_ptr<OpenFile> file, bool cloexec, int min_fd) {
  if (min_fd < 0 || min_fd >= kMaxFds) return FailErrno(EINVAL, "fd number out of range");
  for (int fd = min_fd; fd < kMaxFds; ++fd) {
    if (static_cast<size_t>(fd) >= entries_.size()) entries_.resize(fd + 1);
    Entry& entry = entries_[fd];
    if (entry.file == nullptr) {
      NoteSignalfd(file);
      entry.file = std::move(file);
      entry.cloexec = cloexec;
      return fd;
    }
  }
  return FailErrno(EMFILE, "guest fd table full");
}

bool FdTable::IsOpen(int fd) const {
  return fd >= 0 && static_cast<size_t>(fd) < entries_.size() && entries_[fd].file != nullptr;
}

Result<OpenFile*> FdTable::Get(int fd) const {
  if (!IsOpen(fd)) return FailErrno(EBADF, fmt::format("guest fd {}", fd));
  return entries_[fd].file.get();
}

Result<void> FdTable::Close(int fd) {
  if (!IsOpen(fd)) return FailErrno(EBADF, fmt::format("closing guest fd {}", fd));
  entries_[fd] = Entry{};
  while (!entries_.empty() && entries_.back().file == nullptr) entries_.pop_back();
  return {};
}

Result<int> FdTable::Dup(int fd, int min_fd, bool cloexec) {
  if (!IsOpen(fd)) return FailErrno(EBADF, fmt::format("duplicating guest fd {}", fd));
  return Install(entries_[fd].file, cloexec, min_fd);
}

Result<int> FdTable::DupTo(int oldfd, int newfd, bool cloexec) {
  if (!IsOpen(oldfd)) return FailErrno(EBADF, fmt::format("duplicating guest fd {}", oldfd));
  if (newfd < 0 || newfd >= kMaxFds) return FailErrno(EBADF, fmt::format("guest fd {}", newfd));
  if (oldfd == newfd) return newfd;
  if (static_cast<size_t>(newfd) >= entries_.size()) entries_.resize(newfd + 1);
  entries_[newfd] = Entry{entries_[oldfd].file, cloexec};
  return newfd;
}

void FdTable::NoteSignalfd(const std::shared_ptr<OpenFile>& file) {
  if (file == nullptr || file->kind != FileKind::kSignalfd) return;
  for (const std::weak_ptr<OpenFile>& known : signalfds_) {
    if (known.lock() == file) return;
  }
  signalfds_.push_back(file);
}

Result<void> FdTable::InstallAt(int fd, std::shared_ptr<OpenFile> file, bool cloexec) {
  if (fd < 0 || fd >= kMaxFds) return FailErrno(EBADF, fmt::format("guest fd {}", fd));
  if (static_cast<size_t>(fd) >= entries_.size()) entries_.resize(fd + 1);
  NoteSignalfd(file);
  entries_[fd] = Entry{std::move(file), cloexec};
  return {};
}

void FdTable::ShareOutput(pthread_mutex_t* lock, bool line_buffered, const std::string& prefix) {
  for (auto& entry : entries_) {
    OpenFile* file = entry.file.get();
    if (file != nullptr && file->kind == FileKind::kStdio && file->stdio_fd != 0) {
      file->line_writer = std::make_shared<LineWriter>(file->stdio_fd, prefix, lock, line_buffered);
    }
  }
}

void FdTable::FlushLineOutput() {
  for (auto& entry : entries_) {
    if (entry.file != nullptr && entry.file->line_writer != nullptr) {
      entry.file->line_writer->Flush();
    }
  }
}

Result<bool> FdTable::GetCloexec(int fd) const {
  if (!IsOpen(fd)) return FailErrno(EBADF, fmt::format("guest fd {}", fd));
  return entries_[fd].cloexec;
}

Result<void> FdTable::SetCloexec(int fd, bool cloexec) {
  if (!IsOpen(fd)) return FailErrno(EBADF, fmt::format("guest fd {}", fd));
  entries_[fd].cloexec = cloexec;
  return {};
}

void FdTable::CloseRange(unsigned first, unsigned last, bool cloexec_only) {
  if (first >= entries_.size()) return;
  size_t end = std::min<size_t>(static_cast<size_t>(last) + 1, entries_.size());
  for (size_t fd = first; fd < end; ++fd) {
    if (entries_[fd].file == nullptr) continue;
    if (cloexec_only) {
      entries_[fd].cloexec = true;
    } else {
      entries_[fd] = Entry{};
    }
  }
  while (!entries_.empty() && entries_.back().file == nullptr) entries_.pop_back();
}

void FdTable::CloseOnExec() {
  for (Entry& entry : entries_) {
    if (entry.cloexec) entry = Entry{};
  }
  while (!entries_.empty() && entries_.back().file == nullptr) entries_.pop_back();
}

void FdTable::ClosePipes() {
  for (Entry& entry : entries_) {
    if (entry.file != nullptr && entry.file->kind == FileKind::kPipe) entry = Entry{};
  }
  while (!entries_.empty() && entries_.back().file == nullptr) entries_.pop_back();
}

int FdTable::OpenCount() const {
  int count = 0;
  for (const Entry& entry : entries_) count += entry.file != nullptr;
  return count;
}

}  // namespace flurry
