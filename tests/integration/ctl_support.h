// Helpers the control-socket tests share: a flurry running in the background, `flurry ctl`,
// reading ctl's "key: value" output, and a raw client of the API socket.
#pragma once

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <functional>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "harness.h"

namespace flurry_test {

using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

// `flurry ARGS...` (or, with RawCommand, any ARGV) running in the background (own process
// group), stdout and stderr collected.
struct RawCommand {};
class Background {
 public:
  explicit Background(std::vector<std::string> args) : Background(RawCommand{}, WithFlurry(args)) {}
  Background(RawCommand, std::vector<std::string> args) {
    result_.argv = args;
    int out[2], err[2];
    if (pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
      ADD_FAILURE() << "pipe2: " << strerror(errno);
      return;
    }
    std::vector<char*> cargv;
    for (auto& a : args) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    start_ = Clock::now();
    pid_ = fork();
    if (pid_ == 0) {
      setpgid(0, 0);
      int null = open("/dev/null", O_RDONLY);
      dup2(null, 0);
      dup2(out[1], 1);
      dup2(err[1], 2);
      execv(cargv[0], cargv.data());
      _exit(kExecFailed);
    }
    setpgid(pid_, pid_);
    close(out[1]);
    close(err[1]);
    reader_ = std::thread([this, o = out[0], e = err[0]] { ReadLoop(o, e); });
  }

  ~Background() {
    if (pid_ > 0 && !reaped_) {
      kill(-pid_, SIGKILL);
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    stop_reader_ = true;
    if (reader_.joinable()) reader_.join();
  }

  pid_t pid() const { return pid_; }

  static std::vector<std::string> WithFlurry(std::vector<std::string> args) {
    args.insert(args.begin(), FlurryBinary());
    return args;
  }

  // SIGKILL to the process itself (not its group): what it started must notice on its own.
  void KillProcess() { kill(pid_, SIGKILL); }

  std::string out() {
    std::lock_guard lock(mutex_);
    return result_.out;
  }
  std::string err() {
    std::lock_guard lock(mutex_);
    return result_.err;
  }

  // Waits until stdout satisfies `predicate` (or the deadline passes).
  bool WaitForOut(const std::function<bool(const std::string&)>& predicate,
                  std::chrono::milliseconds timeout = 20s) {
    std::unique_lock lock(mutex_);
    return cv_.wait_for(lock, timeout, [&] { return predicate(result_.out) || eof_; }) &&
           predicate(result_.out);
  }
  bool WaitForLine(const std::string& line, std::chrono::milliseconds timeout = 20s) {
    return WaitForOut(
        [&](const std::string& out) {
          return out.rfind(line + "\n", 0) == 0 ||
                 out.find("\n" + line + "\n") != std::string::npos;
        },
        timeout);
  }

  // Waits for the process to exit and for EOF on its stdout and stderr (so every process that
  // inherited them, e.g. clones, has ended too). Kills the group after `timeout`.
  RunResult Wait(std::chrono::seconds timeout = 60s) {
    const auto deadline = Clock::now() + timeout;
    {
      std::unique_lock lock(mutex_);
      if (!cv_.wait_until(lock, deadline, [&] { return eof_; })) result_.timed_out = true;
    }
    int status = 0;
    for (;;) {
      pid_t r = waitpid(pid_, &status, WNOHANG);
      if (r == pid_) break;
      if (r < 0 && errno != EINTR) break;
      if (Clock::now() >= deadline && !result_.timed_out) result_.timed_out = true;
      if (result_.timed_out) {
        kill(-pid_, SIGKILL);
        kill(pid_, SIGKILL);
      }
      usleep(2000);
    }
    reaped_ = true;
    if (result_.timed_out) kill(-pid_, SIGKILL);  // whatever still holds the pipes
    stop_reader_ = true;
    if (reader_.joinable()) reader_.join();
    std::lock_guard lock(mutex_);
    result_.seconds = std::chrono::duration<double>(Clock::now() - start_).count();
    if (WIFEXITED(status)) {
      result_.exited = true;
      result_.exit_code = WEXITSTATUS(status);
    } else if (WIFSIGNALED(status)) {
      result_.term_signal = WTERMSIG(status);
    }
    return result_;
  }

 private:
  void ReadLoop(int out_fd, int err_fd) {
    char buf[65536];
    while ((out_fd >= 0 || err_fd >= 0) && !stop_reader_) {
      pollfd fds[2] = {{out_fd, POLLIN, 0}, {err_fd, POLLIN, 0}};
      if (poll(fds, 2, 50) <= 0) continue;
      for (int i = 0; i < 2; ++i) {
        int& fd = i == 0 ? out_fd : err_fd;
        if (fd < 0 || fds[i].revents == 0) continue;
        ssize_t n = read(fd, buf, sizeof buf);
        std::lock_guard lock(mutex_);
        if (n > 0) {
          (i == 0 ? result_.out : result_.err).append(buf, static_cast<size_t>(n));
        } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
          close(fd);
          fd = -1;
        }
        cv_.notify_all();
      }
    }
    if (out_fd >= 0) close(out_fd);
    if (err_fd >= 0) close(err_fd);
    std::lock_guard lock(mutex_);
    eof_ = true;
    cv_.notify_all();
  }

  pid_t pid_ = -1;
  bool reaped_ = false;
  Clock::time_point start_;
  std::thread reader_;
  std::atomic<bool> stop_reader_{false};
  std::mutex mutex_;
  std::condition_variable cv_;
  bool eof_ = false;  // both pipes closed
  RunResult result_;
};

inline size_t CountLinesStartingWith(const std::string& text, const std::string& prefix) {
  size_t n = 0;
  for (const auto& line : Lines(text)) n += StartsWith(line, prefix) ? 1 : 0;
  return n;
}

// The value after "key: " in `flurry ctl` output.
inline std::optional<std::string> Field(const std::string& out, const std::string& key) {
  for (const auto& line : Lines(out)) {
    if (StartsWith(line, key + ": ")) return line.substr(key.size() + 2);
  }
  return std::nullopt;
}

inline uint64_t Syscalls(const RunResult& r) {
  auto v = Field(r.out, "syscalls");
  return v ? std::stoull(*v) : 0;
}

inline void ExpectCtlOk(const RunResult& r) {
  EXPECT_FALSE(r.timed_out) << r.Describe();
  EXPECT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
}

// Pids of the processes whose parent is this process.
inline std::set<pid_t> Children() {
  std::set<pid_t> children;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return children;
  const pid_t self = getpid();
  while (dirent* e = readdir(proc)) {
    const pid_t pid = static_cast<pid_t>(std::atoi(e->d_name));
    if (pid <= 0) continue;
    std::ifstream status(std::string("/proc/") + e->d_name + "/status");
    std::string line;
    while (std::getline(status, line)) {
      if (StartsWith(line, "PPid:")) {
        if (std::atoi(line.c_str() + 5) == self) children.insert(pid);
        break;
      }
    }
  }
  closedir(proc);
  return children;
}

// True once no child of this process is left (reaping those that end) within `timeout`.
inline bool NoChildrenLeft(std::chrono::seconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    while (waitpid(-1, nullptr, WNOHANG) > 0) {
    }
    if (Children().empty()) return true;
    if (std::chrono::steady_clock::now() > deadline) return false;
    usleep(20000);
  }
}

inline RunResult Ctl(const std::string& socket, std::vector<std::string> command) {
  command.insert(command.begin(), {"ctl", socket});
  return Flurry(command, WithDeadline(30));
}

// A raw client of the API socket.
class RawClient {
 public:
  explicit RawClient(const std::string& path) {
    fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    if (connect(fd_, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
      close(fd_);
      fd_ = -1;
    }
  }
  ~RawClient() {
    if (fd_ >= 0) close(fd_);
  }
  bool connected() const { return fd_ >= 0; }
  int fd() const { return fd_; }

  bool Send(const std::string& data) {
    size_t done = 0;
    while (done < data.size()) {
      ssize_t n = send(fd_, data.data() + done, data.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<size_t>(n);
    }
    return true;
  }

  // Reads up to `count` lines within `timeout`.
  std::vector<std::string> ReadLines(size_t count, std::chrono::milliseconds timeout = 20s) {
    std::vector<std::string> lines;
    const auto deadline = Clock::now() + timeout;
    while (lines.size() < count) {
      size_t newline;
      if ((newline = buffer_.find('\n')) != std::string::npos) {
        lines.push_back(buffer_.substr(0, newline));
        buffer_.erase(0, newline + 1);
        continue;
      }
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (left.count() <= 0) break;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
      char chunk[4096];
      ssize_t n = read(fd_, chunk, sizeof chunk);
      if (n <= 0) break;
      buffer_.append(chunk, static_cast<size_t>(n));
    }
    return lines;
  }

  // True when the server closed the connection (EOF) within `timeout`.
  bool SeesEof(std::chrono::milliseconds timeout) {
    pollfd p{fd_, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return false;
    char c;
    return read(fd_, &c, 1) == 0;
  }

 private:
  int fd_ = -1;
  std::string buffer_;
};

inline bool IsOkReply(const std::string& line) { return StartsWith(line, "{\"ok\":true"); }
inline bool IsErrorReply(const std::string& line) {
  return StartsWith(line, "{\"ok\":false,\"error\":");
}

inline bool Exists(const fs::path& path) {
  struct stat st {};
  return lstat(path.c_str(), &st) == 0;
}

// ---------------------------------------------------------------------------------------------
// flurry ctl: command line and connection errors

}  // namespace flurry_test
