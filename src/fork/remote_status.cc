#include "fork/remote_status.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <charconv>
#include <sstream>

#include "base/spawn.h"
#include "base/unique_fd.h"
#include "base/wait_readable.h"

extern char** environ;

namespace flurry {
namespace {

constexpr size_t kMaxOutput = 1 << 20;  // far more than 4096 hosts' lines

template <typename T>
bool ParseNumber(const std::string& word, T* value) {
  const auto [end, error] = std::from_chars(word.data(), word.data() + word.size(), *value);
  return error == std::errc() && end == word.data() + word.size();
}

// Reaps `pid` unless SIGCHLD is ignored (a VMM ignores it: its children are reaped by the
// kernel, and a waitpid would wait for every child there is).
void Reap(pid_t pid) {
  struct sigaction current {};
  if (sigaction(SIGCHLD, nullptr, &current) != 0) return;
  if (current.sa_handler == SIG_IGN || (current.sa_flags & SA_NOCLDWAIT) != 0) return;
  while (waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
  }
}

// The whole lines read from `fd` until end of file or `give_up`; `*ended`: end of file came.
std::string ReadAnswer(int fd, std::chrono::steady_clock::time_point give_up, bool* ended) {
  std::string output;
  char chunk[4096];
  *ended = false;
  while (output.size() < kMaxOutput && WaitReadable(fd, give_up, "the status answer")) {
    const ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n == 0) *ended = true;
    if (n <= 0) break;
    output.append(chunk, static_cast<size_t>(n));
  }
  // Only whole lines count: a line cut off by the limit is no answer.
  output.resize(output.rfind('\n') == std::string::npos ? 0 : output.rfind('\n') + 1);
  return output;
}

}  // namespace

std::vector<std::string> StatusCommandLine(const std::string& remote_binary,
                                           const std::string& cluster_file,
                                           const std::string& member,
                                           std::chrono::milliseconds call_deadline) {
  return {remote_binary, "status",        "--machine",
          "--cluster",   cluster_file,    "--member",
          member,        "--deadline-ms", std::to_string(call_deadline.count())};
}

std::vector<HostReport> ParseStatusLines(std::string_view text) {
  std::vector<HostReport> reports;
  std::istringstream lines{std::string(text)};
  for (std::string line; std::getline(lines, line);) {
    std::istringstream words(line);
    std::string tag, state;
    HostReport report;
    if (!(words >> tag >> report.name >> state) || tag != "host") continue;
    if (state == "down") {
      std::getline(words >> std::ws, report.why_down);
      reports.push_back(std::move(report));
      continue;
    }
    if (state != "up") continue;
    std::string slots, running, memory, free, rest;
    if (!(words >> slots >> running >> memory >> free) || (words >> rest)) continue;
    if (!ParseNumber(slots, &report.slots) || !ParseNumber(running, &report.running_clones) ||
        !ParseNumber(memory, &report.memory_bytes) ||
        !ParseNumber(free, &report.free_memory_bytes)) {
      continue;
    }
    report.up = true;
    reports.push_back(std::move(report));
  }
  return reports;
}

RemoteStatusSource::RemoteStatusSource(std::string remote_binary, std::string cluster_file,
                                       std::string member, std::chrono::milliseconds call_deadline,
                                       std::chrono::milliseconds limit)
    : remote_binary_(std::move(remote_binary)),
      cluster_file_(std::move(cluster_file)),
      member_(std::move(member)),
      call_deadline_(call_deadline),
      limit_(limit) {}

std::vector<std::string> RemoteStatusSource::CommandLine() const {
  return StatusCommandLine(remote_binary_, cluster_file_, member_, call_deadline_);
}

Result<std::vector<HostReport>> RemoteStatusSource::Query() {
  const auto give_up = std::chrono::steady_clock::now() + limit_;
  const std::vector<std::string> args = CommandLine();

  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return FailErrno("a pipe for flurry-remote status");
  UniqueFd ours(out[0]), theirs(out[1]);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), STDOUT_FILENO);
  auto spawned = SpawnWithDefaultSignals(args, &actions);
  posix_spawn_file_actions_destroy(&actions);
  const pid_t pid = FLURRY_TRY(std::move(spawned));
  theirs.Reset();  // EOF once the program (and only it) is done
  // A pidfd to kill it by: its pid may be reaped and reused meanwhile (SIGCHLD ignored).
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));

  bool ended = false;
  const std::string output = ReadAnswer(ours.get(), give_up, &ended);
  if (pidfd.valid()) syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
  Reap(pid);
  // What came before the limit stands; a host not reported by then did not answer.
  return ParseStatusLines(output);
}

SpareStatusSource::SpareStatusSource(SpareStandIn& spare, const RemoteCloneConfig& config)
    : spare_(spare),
      command_line_(StatusCommandLine(config.remote_binary, config.cluster_file, config.member,
                                      config.status_call_deadline)),
      limit_(config.status_limit) {}

Result<std::vector<HostReport>> SpareStatusSource::Query() {
  stuck_ = true;  // until it has answered
  // A spare still starting is waited for (a program started now would do the same work,
  // later); its answer then has the whole limit, as a program's would.
  FLURRY_TRY_CTX(spare_.WaitUntilReady(std::chrono::steady_clock::now() + limit_),
                 "asking the spare stand-in");
  const auto give_up = std::chrono::steady_clock::now() + limit_;
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return FailErrno("a pipe for the spare stand-in's answer");
  UniqueFd ours(out[0]), theirs(out[1]);
  FLURRY_TRY_CTX(spare_.Ask(command_line_, {theirs.get()}), "asking the spare stand-in");
  theirs.Reset();  // EOF once the spare has answered
  bool ended = false;
  const std::string output = ReadAnswer(ours.get(), give_up, &ended);
  stuck_ = !ended;
  // The answer has a line per host: none at all is a spare that died with the job.
  if (output.empty()) {
    stuck_ = true;
    return Fail("the spare stand-in did not answer");
  }
  return ParseStatusLines(output);
}

}  // namespace flurry
