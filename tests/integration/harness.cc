// The integration-test harness (harness.h).
#include "harness.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

namespace flurry_test {
namespace {

using Clock = std::chrono::steady_clock;

const std::string kFlurry = FLURRY_BIN;
const std::string kGuestDir = GUEST_DIR;
const std::string kFixtureDir = FIXTURE_DIR;

void SetNonBlocking(int fd) { fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK); }

[[noreturn]] void ChildFail(int code, const char* what) {
  const char* reason = strerror(errno);
  (void)!write(2, what, strlen(what));
  (void)!write(2, ": ", 2);
  (void)!write(2, reason, strlen(reason));
  (void)!write(2, "\n", 1);
  _exit(code);
}

void KillGroup(pid_t pid) {
  kill(-pid, SIGKILL);
  kill(pid, SIGKILL);  // in case it had not made its group yet
}

}  // namespace

const std::string& FlurryBinary() { return kFlurry; }
const std::string& GuestDir() { return kGuestDir; }
std::string Guest(const std::string& name) { return kGuestDir + "/" + name; }
std::string Fixture(const std::string& name) { return kFixtureDir + "/" + name; }

RunOptions WithStdin(std::string data) {
  RunOptions o;
  o.stdin_data = std::move(data);
  return o;
}
RunOptions WithDeadline(int seconds) {
  RunOptions o;
  o.timeout_seconds = seconds;
  return o;
}
RunOptions WithoutKvm() {
  RunOptions o;
  o.hide_kvm = true;
  return o;
}

std::string RunResult::Describe() const {
  std::ostringstream s;
  s << "\n  command:";
  for (const auto& a : argv) s << " '" << a << "'";
  if (timed_out) s << "\n  HUNG: killed by the test after its deadline";
  if (exited)
    s << "\n  exit status: " << exit_code;
  else
    s << "\n  killed by signal " << term_signal << " (" << strsignal(term_signal) << ")";
  s << "\n  time: " << seconds << " s";
  s << "\n  stdout (" << out.size() << " bytes):\n" << Excerpt(out);
  s << "\n  stderr (" << err.size() << " bytes):\n" << Excerpt(err);
  return s.str();
}

std::string RunResult::Excerpt(const std::string& text) {
  constexpr size_t kMax = 4000;
  if (text.size() <= kMax) return text;
  return text.substr(0, kMax) + "\n[... " + std::to_string(text.size() - kMax) + " more bytes]";
}

RunResult Run(const std::vector<std::string>& argv, const RunOptions& options) {
  signal(SIGPIPE, SIG_IGN);
  RunResult result;
  result.argv = argv;
  int in[2], out[2], err[2];
  if (pipe2(in, O_CLOEXEC) != 0 || pipe2(out, O_CLOEXEC) != 0 || pipe2(err, O_CLOEXEC) != 0) {
    ADD_FAILURE() << "pipe2: " << strerror(errno);
    return result;
  }
  std::vector<char*> cargv;
  for (const auto& a : argv) cargv.push_back(const_cast<char*>(a.c_str()));
  cargv.push_back(nullptr);

  auto start = Clock::now();
  pid_t pid = fork();
  if (pid < 0) {
    ADD_FAILURE() << "fork: " << strerror(errno);
    return result;
  }
  if (pid == 0) {
    // A process group of its own, so everything it leaves behind (clone VMMs) can be killed.
    setpgid(0, 0);
    dup2(in[0], 0);
    dup2(out[1], 1);
    dup2(err[1], 2);
    if (options.hide_kvm) {
      if (unshare(CLONE_NEWNS) != 0) ChildFail(kCannotHideKvm, "unshare(CLONE_NEWNS)");
      if (mount("none", "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
        ChildFail(kCannotHideKvm, "mount --make-rprivate /");
      if (mount("tmpfs", "/dev", "tmpfs", 0, nullptr) != 0)
        ChildFail(kCannotHideKvm, "mount tmpfs /dev");
    }
    for (const auto& [key, value] : options.env) setenv(key.c_str(), value.c_str(), 1);
    execv(cargv[0], cargv.data());
    ChildFail(kExecFailed, "execv");
  }
  setpgid(pid, pid);  // also here, so the group exists before we may have to kill it
  close(in[0]);
  close(out[1]);
  close(err[1]);
  int in_fd = in[1], out_fd = out[0], err_fd = err[0];
  SetNonBlocking(in_fd);
  size_t in_off = 0;
  if (options.stdin_data.empty()) {
    close(in_fd);
    in_fd = -1;
  }

  auto deadline = start + std::chrono::seconds(options.timeout_seconds);
  char buf[65536];
  while (out_fd >= 0 || err_fd >= 0) {
    auto now = Clock::now();
    if (now >= deadline) {
      KillGroup(pid);
      result.timed_out = true;
      break;
    }
    int wait_ms = static_cast<int>(
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now).count() + 1);
    pollfd fds[3];
    int n = 0;
    int out_i = -1, err_i = -1, in_i = -1;
    if (out_fd >= 0) out_i = n, fds[n++] = {out_fd, POLLIN, 0};
    if (err_fd >= 0) err_i = n, fds[n++] = {err_fd, POLLIN, 0};
    if (in_fd >= 0) in_i = n, fds[n++] = {in_fd, POLLOUT, 0};
    int ready = poll(fds, n, wait_ms);
    if (ready < 0 && errno != EINTR) {
      ADD_FAILURE() << "poll: " << strerror(errno);
      KillGroup(pid);
      break;
    }
    if (ready <= 0) continue;
    auto drain = [&](int i, int& fd, std::string& sink) {
      if (i < 0 || fds[i].revents == 0) return;
      ssize_t r = read(fd, buf, sizeof buf);
      if (r > 0) {
        sink.append(buf, static_cast<size_t>(r));
      } else if (r == 0 || (errno != EINTR && errno != EAGAIN)) {
        close(fd);
        fd = -1;
      }
    };
    drain(out_i, out_fd, result.out);
    drain(err_i, err_fd, result.err);
    if (in_i >= 0 && fds[in_i].revents != 0) {
      ssize_t w =
          write(in_fd, options.stdin_data.data() + in_off, options.stdin_data.size() - in_off);
      if (w > 0) in_off += static_cast<size_t>(w);
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || in_off == options.stdin_data.size()) {
        close(in_fd);
        in_fd = -1;
      }
    }
  }
  for (int fd : {in_fd, out_fd, err_fd})
    if (fd >= 0) close(fd);

  int status = 0;
  // After the pipes close the process is exiting; still bound the wait.
  for (;;) {
    pid_t r = waitpid(pid, &status, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno != EINTR) {
      ADD_FAILURE() << "waitpid: " << strerror(errno);
      return result;
    }
    if (Clock::now() >= deadline && !result.timed_out) {
      KillGroup(pid);
      result.timed_out = true;
    }
    usleep(2000);
  }
  // Whatever is left of the process group (nothing, normally) goes too. The group's ID cannot
  // be reused while it has members.
  kill(-pid, SIGKILL);
  result.seconds = std::chrono::duration<double>(Clock::now() - start).count();
  if (WIFEXITED(status)) {
    result.exited = true;
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.term_signal = WTERMSIG(status);
  }
  return result;
}

RunResult Flurry(std::vector<std::string> args, const RunOptions& options) {
  args.insert(args.begin(), kFlurry);
  return Run(args, options);
}

RunResult ExpectSameAsNative(const std::vector<std::string>& program,
                             const std::string& killed_prefix, const RunOptions& options) {
  RunResult native = Run(program, options);
  std::vector<std::string> args = {"run"};
  args.insert(args.end(), options.run_flags.begin(), options.run_flags.end());
  args.insert(args.end(), program.begin(), program.end());
  RunResult guest = Flurry(args, options);
  EXPECT_FALSE(native.timed_out) << native.Describe();
  EXPECT_FALSE(guest.timed_out) << guest.Describe();
  EXPECT_TRUE(guest.exited) << "flurry itself died" << guest.Describe();
  EXPECT_EQ(guest.out, native.out) << guest.Describe();
  if (native.exited) {
    EXPECT_EQ(guest.exit_code, native.exit_code) << guest.Describe();
    EXPECT_EQ(guest.err, "") << guest.Describe();
  } else {
    EXPECT_EQ(guest.exit_code, 128 + native.term_signal) << guest.Describe();
    EXPECT_EQ(Lines(guest.err).size(), 1u) << guest.Describe();
    EXPECT_TRUE(StartsWith(guest.err, killed_prefix)) << guest.Describe();
  }
  return guest;
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream s(text);
  std::string line;
  while (std::getline(s, line)) lines.push_back(line);
  return lines;
}

bool StartsWith(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

std::string ReadFile(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

void WriteFile(const fs::path& path, const std::string& content) {
  std::ofstream f(path, std::ios::binary);
  f << content;
}

TempDir::TempDir() {
  std::string tmpl = (fs::temp_directory_path() / "flurry_it_XXXXXX").string();
  if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp: " << strerror(errno);
  path_ = tmpl;
}

TempDir::~TempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void ExpectCleanExit(const RunResult& r, int code) {
  EXPECT_FALSE(r.timed_out) << r.Describe();
  EXPECT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, code) << r.Describe();
  EXPECT_EQ(r.err, "") << "unexpected stderr" << r.Describe();
}

void ExpectInputError(const RunResult& r) {
  EXPECT_FALSE(r.timed_out) << r.Describe();
  ASSERT_TRUE(r.exited) << "flurry crashed instead of reporting an error" << r.Describe();
  EXPECT_EQ(r.exit_code, 1) << r.Describe();
  EXPECT_EQ(r.out, "") << r.Describe();
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << "expected a one-line error" << r.Describe();
  EXPECT_TRUE(StartsWith(lines[0], "flurry: ")) << r.Describe();
  EXPECT_TRUE(r.err.back() == '\n') << r.Describe();
}

void ExpectUsageError(const RunResult& r) {
  EXPECT_FALSE(r.timed_out) << r.Describe();
  ASSERT_TRUE(r.exited) << "flurry crashed instead of reporting an error" << r.Describe();
  EXPECT_TRUE(r.exit_code == 1 || r.exit_code == 2) << r.Describe();
  EXPECT_NE(r.err, "") << r.Describe();
}

}  // namespace flurry_test
