#include "daemon/clone_runner.h"

#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string_view>
#include <utility>

extern char** environ;

#include "base/spawn.h"
#include "flurry/sf_abi.h"
#include "fork/clone_vmm_request.h"

namespace flurry {

std::vector<std::string> CloneCommandLine(const CloneRunSpec& spec) {
  std::vector<std::string> argv = {spec.flurry_binary, "restore",
                                   "--as-clone",       std::to_string(spec.clone_id),
                                   "--family",         fmt::format("{:x}", spec.family_id),
                                   "--outcome-fd",     "3",
                                   "--memory",         "on-demand"};
  if (!spec.root_dir.empty()) {
    argv.push_back("--dir");
    argv.push_back(spec.root_dir);
  }
  if (!spec.file_cache_dir.empty()) {
    argv.push_back("--file-cache");
    argv.push_back(spec.file_cache_dir);
  }
  if (!spec.hostname.empty()) {
    argv.push_back("--hostname");
    argv.push_back(spec.hostname);
  }
  if (spec.prefetch_pages != 0) {
    argv.push_back("--prefetch");
    argv.push_back(std::to_string(spec.prefetch_pages));
  }
  if (!spec.avoid.all()) {
    argv.push_back("--avoid");
    argv.push_back(FormatAvoidance(spec.avoid));
  }
  if (!spec.prefix_output) argv.push_back("--no-clone-prefix");
  if (spec.memory_stats) argv.push_back("--stats");
  if (!spec.backend.empty()) {
    argv.push_back("--backend");
    argv.push_back(spec.backend);
  }
  argv.push_back("tcp://" + spec.page_server);
  return argv;
}

CloneRunner::CloneRunner(CloneRunner&& other) noexcept
    : pid_(std::exchange(other.pid_, 0)),
      pidfd_(std::move(other.pidfd_)),
      stdout_(std::move(other.stdout_)),
      stderr_(std::move(other.stderr_)),
      outcome_(std::move(other.outcome_)),
      request_(std::move(other.request_)),
      reaped_(std::exchange(other.reaped_, true)) {}

Result<CloneRunner> CloneRunner::StartWaiting(const CloneVmmSpec& vmm) {
  TiedSpawn program;
  program.args = {vmm.flurry_binary, "clone-vmm", "--request-fd", "4"};
  if (!vmm.backend.empty()) {
    program.args.push_back("--backend");
    program.args.push_back(vmm.backend);
  }
  if (vmm.ram_bytes != 0) {
    program.args.push_back("--ram-bytes");
    program.args.push_back(std::to_string(vmm.ram_bytes));
  }
  program.work_dir = vmm.work_dir;
  // The daemon's environment; the page server's key comes with the request (it is on no
  // command line, and not in /proc/PID/environ either).
  for (char** e = environ; *e != nullptr; ++e) {
    if (!std::string_view(*e).starts_with("FLURRY_PAGE_KEY=")) program.environment.emplace_back(*e);
  }

  int out[2], err[2], channel[2], request[2];
  if (pipe2(out, O_CLOEXEC) != 0) return FailErrno("a pipe for the clone's stdout");
  UniqueFd out_read(out[0]), out_write(out[1]);
  if (pipe2(err, O_CLOEXEC) != 0) return FailErrno("a pipe for the clone's stderr");
  UniqueFd err_read(err[0]), err_write(err[1]);
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0) {
    return FailErrno("the clone's outcome channel");
  }
  UniqueFd channel_read(channel[0]), channel_write(channel[1]);
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, request) != 0) {
    return FailErrno("a socket for the clone VMM's request");
  }
  UniqueFd request_read(request[0]), request_write(request[1]);
  UniqueFd null(open("/dev/null", O_RDONLY | O_CLOEXEC));
  // The child's fds 0..4 come from these; none may already sit on 0..4 (a dup2 onto itself
  // would keep close-on-exec, and one dup2 could overwrite the next one's source).
  constexpr int kFds = 5;
  UniqueFd sources[kFds];
  const int originals[kFds] = {null.get(), out_write.get(), err_write.get(), channel_write.get(),
                               request_read.get()};
  for (int i = 0; i < kFds; ++i) {
    sources[i].Reset(fcntl(originals[i], F_DUPFD_CLOEXEC, 10));
    if (!sources[i].valid()) return FailErrno("preparing the clone's descriptors");
    program.fds.push_back(sources[i].get());
  }
  // In a process group of its own (Kill ends the group), tied to this thread.
  const pid_t pid = FLURRY_TRY_CTX(SpawnTied(program), "starting a clone VMM");
  CloneRunner runner;
  runner.pid_ = pid;
  // Before anyone can Begin it: it has one thread yet (its own start), which its later
  // threads would inherit SCHED_IDLE from; Begin puts it back.
  if (vmm.idle) {
    sched_param idle{};
    (void)sched_setscheduler(pid, SCHED_IDLE, &idle);  // if not, it waits at normal priority
  }
  runner.pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!runner.pidfd_.valid()) return FailErrno("pidfd_open for the clone VMM");
  runner.stdout_ = std::move(out_read);
  runner.stderr_ = std::move(err_read);
  runner.outcome_ = std::move(channel_read);
  runner.request_ = std::move(request_write);
  return runner;
}

Result<void> CloneRunner::Begin(const CloneRunSpec& spec) {
  if (!request_.valid()) return Fail("the clone VMM has its clone already");
  // Started at SCHED_IDLE (WarmVmms), maybe still making its VM: from now on it is a clone's
  // VMM, at normal priority.
  FLURRY_TRY(LeaveIdlePriority());
  CloneVmmRequest request;
  request.work_dir = spec.work_dir;
  request.page_key = spec.page_server_key;
  request.args = CloneCommandLine(spec);
  // A VMM that is gone is EPIPE here.
  Result<void> sent = SendCloneVmmRequest(request_.get(), request);
  request_.Reset();
  return sent;
}

Result<CloneRunner> CloneRunner::Start(const CloneRunSpec& spec) {
  CloneRunner runner =
      FLURRY_TRY(StartWaiting(CloneVmmSpec{spec.flurry_binary, spec.backend, 0, spec.work_dir}));
  FLURRY_TRY_CTX(runner.Begin(spec), "starting the clone VMM");
  return runner;
}

bool CloneRunner::Exited() const {
  if (reaped_) return true;
  pollfd ended{pidfd_.get(), POLLIN, 0};
  return poll(&ended, 1, 0) == 1;
}

Result<void> CloneRunner::LeaveIdlePriority() {
  // Its one thread: a waiting VMM starts none before its request.
  if (sched_getscheduler(pid_) != SCHED_IDLE) return {};
  sched_param normal{};
  if (sched_setscheduler(pid_, SCHED_OTHER, &normal) != 0) {
    return FailErrno("giving the clone VMM normal priority");
  }
  return {};
}

CloneRunner::~CloneRunner() {
  if (pid_ > 0 && !reaped_) {
    // A VMM still waiting at SCHED_IDLE would exit only when the host has CPU to spare.
    (void)LeaveIdlePriority();
    Kill();
    waitpid(pid_, nullptr, 0);
  }
}

void CloneRunner::Kill() {
  if (pid_ <= 0 || reaped_) return;
  kill(-pid_, SIGKILL);
  if (pidfd_.valid()) syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
}

CloneRunResult CloneRunner::Wait(
    const std::function<bool(int stream, std::string_view data)>& on_output,
    const std::function<bool()>& keep_going) {
  CloneRunResult result;
  std::vector<uint8_t> channel;
  bool killed = false, channel_overflow = false;
  int exit_status = 0;
  char buffer[65536];
  // Until the VMM has exited and every pipe is at EOF (its children may hold them: they die
  // with it, being in its process group or tied to it).
  while (!reaped_ || stdout_.valid() || stderr_.valid() || outcome_.valid()) {
    if (!killed && !keep_going()) {
      Kill();
      killed = true;
    }
    pollfd fds[4] = {{stdout_.get(), POLLIN, 0},
                     {stderr_.get(), POLLIN, 0},
                     {outcome_.get(), POLLIN, 0},
                     {reaped_ ? -1 : pidfd_.get(), POLLIN, 0}};
    if (poll(fds, 4, 100) < 0 && errno != EINTR) break;
    for (int i = 0; i < 2; ++i) {
      if (fds[i].revents == 0) continue;
      UniqueFd& fd = i == 0 ? stdout_ : stderr_;
      const ssize_t n = read(fd.get(), buffer, sizeof buffer);
      if (n > 0) {
        if (!killed && !on_output(i + 1, std::string_view(buffer, static_cast<size_t>(n)))) {
          Kill();
          killed = true;
        }
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        fd.Reset();
      }
    }
    if (fds[2].revents != 0) {
      const ssize_t n = read(outcome_.get(), buffer, sizeof buffer);
      if (n > 0) {
        if (channel.size() + static_cast<size_t>(n) > MaxOutcomeBytes()) {
          channel_overflow = true;
        } else {
          channel.insert(channel.end(), buffer, buffer + n);
        }
      } else if (n == 0 || (errno != EINTR && errno != EAGAIN)) {
        outcome_.Reset();
      }
    }
    if (!reaped_ && fds[3].revents != 0) {
      int status = 0;
      if (waitpid(pid_, &status, WNOHANG) == pid_) {
        reaped_ = true;
        exit_status = status;
        // Whatever of its group is left (a snapshot process, its own clones) goes with it.
        kill(-pid_, SIGKILL);
      }
    }
  }
  if (!reaped_) {  // poll failed: end it
    Kill();
    int status = 0;
    waitpid(pid_, &status, 0);
    reaped_ = true;
    exit_status = status;
  }

  if (killed) {
    result.outcome.kind = SF_OUTCOME_LOST;
    result.diagnostic = "the clone was stopped";
    return result;
  }
  if (channel_overflow) {
    result.outcome.kind = SF_OUTCOME_LOST;
    result.diagnostic = "the clone sent an outcome larger than the protocol allows";
    return result;
  }
  auto outcome = DecodeOutcome(channel);
  if (!outcome) {
    result.outcome.kind = SF_OUTCOME_LOST;
    result.diagnostic = "the clone's outcome: " + outcome.error().message();
    return result;
  }
  result.outcome = std::move(*outcome);
  if (result.outcome.kind == SF_OUTCOME_LOST) {
    if (WIFEXITED(exit_status)) {
      result.diagnostic = fmt::format("the clone VMM exited with status {} before its outcome",
                                      WEXITSTATUS(exit_status));
    } else if (WIFSIGNALED(exit_status)) {
      result.diagnostic = fmt::format("the clone VMM was killed by signal {} before its outcome",
                                      WTERMSIG(exit_status));
    }
  }
  return result;
}

}  // namespace flurry
