#include "base/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>

#include "base/unique_fd.h"

namespace flurry {

Result<std::string> ReadSmallFile(const std::string& path, ReadLimits limits) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return FailErrno(fmt::format("{}: cannot open", path));
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return FailErrno(fmt::format("{}: fstat", path));
  if (!S_ISREG(st.st_mode)) return Fail("{}: not a regular file", path);
  if (limits.require_private && (st.st_mode & 077) != 0) {
    return Fail(
        "{}: has mode {:04o}; a private key must not be accessible by group or others "
        "(chmod 600)",
        path, st.st_mode & 07777);
  }
  if (static_cast<uint64_t>(st.st_size) > limits.max_bytes) {
    return Fail("{}: {} bytes exceeds the limit of {} bytes", path, st.st_size, limits.max_bytes);
  }
  // Read one byte past the cap: the file may have grown since fstat.
  std::string content(limits.max_bytes + 1, '\0');
  size_t done = 0;
  while (done < content.size()) {
    const ssize_t n = read(fd.get(), content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno(fmt::format("{}: reading", path));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done > limits.max_bytes) {
    return Fail("{}: exceeds the limit of {} bytes", path, limits.max_bytes);
  }
  content.resize(done);
  return content;
}

std::string DirectoryOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Result<void> WriteFileAtomic(const std::string& path, std::string_view content, mode_t mode,
                             bool exclusive) {
  std::string tmp = path + ".tmp.XXXXXX";
  UniqueFd fd(mkostemp(tmp.data(), O_CLOEXEC));
  if (!fd.valid()) return FailErrno(fmt::format("{}: creating a temporary file next to it", path));
  auto fail = [&](std::string_view what) {
    auto error = FailErrno(fmt::format("{}: {}", path, what));
    unlink(tmp.c_str());
    return error;
  };
  if (fchmod(fd.get(), mode) != 0) return fail("fchmod");
  for (size_t done = 0; done < content.size();) {
    const ssize_t n = write(fd.get(), content.data() + done, content.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return fail("writing");
    }
    done += static_cast<size_t>(n);
  }
  if (fsync(fd.get()) != 0) return fail("fsync");
  if (close(fd.Release()) != 0) return fail("closing");
  if (exclusive) {
    if (link(tmp.c_str(), path.c_str()) != 0) {
      return fail(errno == EEXIST ? "already exists" : "linking the temporary file");
    }
    unlink(tmp.c_str());
  } else if (rename(tmp.c_str(), path.c_str()) != 0) {
    return fail("renaming the temporary file");
  }
  UniqueFd dir_fd(open(DirectoryOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!dir_fd.valid() || fsync(dir_fd.get()) != 0) {
    return FailErrno(fmt::format("{}: fsync of the directory", path));
  }
  return {};
}

}  // namespace flurry
