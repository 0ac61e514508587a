#include "fork/remote_clones.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <cstring>

#include "base/spawn.h"
#include "fork/standin_job.h"

extern char** environ;

namespace flurry {

void OwnedProcess::Kill() {
  if (pidfd_.valid()) syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  pidfd_.Reset();
}

std::vector<std::string> RemoteStandInCommandLine(
    const RemoteCloneConfig& config, const std::vector<RemoteStandIn::HostShare>& shares,
    uint64_t family_id) {
  std::vector<std::string> argv = {config.remote_binary,
                                   "--cluster",
                                   config.cluster_file,
                                   "--member",
                                   config.member,
                                   "--family",
                                   fmt::format("{:x}", family_id),
                                   "--parent-pid",
                                   std::to_string(getpid())};
  for (const RemoteStandIn::HostShare& share : shares) {
    argv.insert(argv.end(), {"--host", share.host, "--count", std::to_string(share.count)});
  }
  if (!config.prefix_output) argv.push_back("--no-clone-prefix");
  if (config.memory_stats) argv.push_back("--memory-stats");
  if (config.prefetch_pages != 0) {
    argv.push_back("--prefetch");
    argv.push_back(std::to_string(config.prefetch_pages));
  }
  if (!config.avoid.all()) {
    argv.push_back("--avoid");
    argv.push_back(FormatAvoidance(config.avoid));
  }
  if (config.ram_bytes != 0) {
    argv.push_back("--ram-bytes");
    argv.push_back(std::to_string(config.ram_bytes));
  }
  return argv;
}

Result<std::vector<RemoteStandIn>> RemoteStandIn::MakeEnds(const std::vector<HostShare>& shares,
                                                           std::vector<UniqueFd>* theirs) {
  std::vector<RemoteStandIn> standins;
  for (size_t k = 0; k < shares.size(); ++k) standins.push_back(RemoteStandIn());
  // The process's ends, share after share: the control pipe's read end, then one outcome
  // channel per clone.
  for (size_t k = 0; k < shares.size(); ++k) {
    RemoteStandIn& standin = standins[k];
    standin.host_ = shares[k].host;
    int control[2];
    if (pipe2(control, O_CLOEXEC) != 0) return FailErrno("a stand-in's control pipe");
    theirs->emplace_back(control[0]);
    standin.control_.Reset(control[1]);
    for (int32_t i = 0; i < shares[k].count; ++i) {
      int channel[2];
      if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0) {
        return FailErrno("the outcome channel of a remote clone");
      }
      standin.channels_.emplace_back(channel[0]);
      theirs->emplace_back(channel[1]);
    }
  }
  return standins;
}

Result<void> RemoteStandIn::Adopt(std::vector<RemoteStandIn>& standins, pid_t pid,
                                  const UniqueFd& pidfd) {
  for (RemoteStandIn& standin : standins) {
    standin.pid_ = pid;
    if (pidfd.valid()) {
      standin.pidfd_.Reset(fcntl(pidfd.get(), F_DUPFD_CLOEXEC, 0));
      if (!standin.pidfd_.valid()) {
        syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
        return FailErrno("duplicating a stand-in's pidfd");
      }
    }
  }
  return {};
}

Result<std::vector<RemoteStandIn>> RemoteStandIn::Spawn(const RemoteCloneConfig& config,
                                                        const std::vector<HostShare>& shares,
                                                        uint64_t family_id) {
  const std::vector<std::string> args = RemoteStandInCommandLine(config, shares, family_id);
  std::vector<UniqueFd> theirs;
  std::vector<RemoteStandIn> standins = FLURRY_TRY(MakeEnds(shares, &theirs));
  // They may sit on low numbers that a dup2 below overwrites: move them above first.
  std::vector<UniqueFd> high;
  for (const UniqueFd& fd : theirs) {
    high.emplace_back(fcntl(fd.get(), F_DUPFD_CLOEXEC, 3 + static_cast<int>(theirs.size())));
    if (!high.back().valid()) return FailErrno("moving a stand-in's descriptor");
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  for (size_t i = 0; i < high.size(); ++i) {
    posix_spawn_file_actions_adddup2(&actions, high[i].get(), 3 + static_cast<int>(i));
  }
  auto spawned = SpawnWithDefaultSignals(args, &actions);
  posix_spawn_file_actions_destroy(&actions);
  const pid_t pid = FLURRY_TRY(std::move(spawned));
  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  // ESRCH: it has ended already (and was reaped: SIGCHLD is ignored in a VMM). It keeps its
  // slots; at sf_clone its clones read EOF on their channels and are LOST.
  if (!pidfd.valid() && errno != ESRCH) {
    syscall(SYS_kill, pid, SIGKILL);  // nobody could end it later
    return FailErrno("pidfd_open for a remote clones' stand-in");
  }
  FLURRY_TRY(Adopt(standins, pid, pidfd));
  return standins;
}

Result<SpareStandIn> SpareStandIn::Spawn(const RemoteCloneConfig& config) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
    return FailErrno("the spare stand-in's socket");
  }
  UniqueFd ours(sv[0]), theirs(sv[1]);
  const std::vector<std::string> args = {
      config.remote_binary, "spare",       "--cluster",    config.cluster_file,
      "--member",           config.member, "--parent-pid", std::to_string(getpid())};
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, theirs.get(), 3);
  auto spawned = SpawnWithDefaultSignals(args, &actions);
  posix_spawn_file_actions_destroy(&actions);
  SpareStandIn spare;
  spare.pid_ = FLURRY_TRY_CTX(std::move(spawned), "starting a spare stand-in");
  spare.pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, spare.pid_, 0)));
  if (!spare.pidfd_.valid()) {
    if (errno != ESRCH) syscall(SYS_kill, spare.pid_, SIGKILL);
    return FailErrno("pidfd_open for a spare stand-in");
  }
  spare.socket_ = std::move(ours);
  return spare;
}

SpareStandIn::~SpareStandIn() {
  if (pidfd_.valid()) syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
}

void SpareStandIn::Forget() {
  pidfd_.Reset();
  socket_.Reset();
}

Result<void> SpareStandIn::Ask(const std::vector<std::string>& args, const std::vector<int>& fds) {
  if (!socket_.valid()) return Fail("the spare stand-in is gone");
  return SendStandInJob(socket_.get(), args, fds);
}

Result<void> SpareStandIn::WaitUntilReady(std::chrono::steady_clock::time_point until) {
  if (ready_) return {};
  if (!socket_.valid()) return Fail("the spare stand-in is gone");
  FLURRY_TRY(ReceiveSpareReady(socket_.get(), until));
  ready_ = true;
  return {};
}

Result<std::vector<RemoteStandIn>> SpareStandIn::Become(const RemoteCloneConfig& config,
                                                        const std::vector<HostShare>& shares,
                                                        uint64_t family_id) {
  // Its ready message is read before the socket closes: closed with a message unread, it would
  // reset the spare's end, and the spare would lose the job.
  FLURRY_TRY(WaitUntilReady(std::chrono::steady_clock::now() + config.status_limit));
  std::vector<UniqueFd> theirs;
  std::vector<RemoteStandIn> standins = FLURRY_TRY(RemoteStandIn::MakeEnds(shares, &theirs));
  std::vector<int> fds;
  for (const UniqueFd& fd : theirs) fds.push_back(fd.get());
  // A spare that has died (EPIPE) is killed below (by the destructor) all the same.
  FLURRY_TRY(
      SendStandInJob(socket_.get(), RemoteStandInCommandLine(config, shares, family_id), fds));
  socket_.Reset();
  FLURRY_TRY(RemoteStandIn::Adopt(standins, pid_, pidfd_));
  pidfd_.Reset();  // the stand-ins own the process now
  return standins;
}

RemoteStandIn::~RemoteStandIn() {
  if (control_.valid() && pidfd_.valid()) {
    syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  }
}

void RemoteStandIn::Forget() {
  pidfd_.Reset();
  control_.Reset();
  channels_.clear();
}

Result<std::vector<SpawnedClone>> RemoteStandIn::Start(const std::string& page_server,
                                                       const std::string& key,
                                                       const std::vector<int32_t>& ids) {
  // A failure closes the control pipe: the stand-in's thread for this host ends at once (its
  // clones are LOST) instead of waiting for the ticket's end.
  if (ids.size() != channels_.size()) {
    control_.Reset();
    return Fail("{} clone IDs for a stand-in of {} clones", ids.size(), channels_.size());
  }
  // Everything that can fail comes before the stand-in is told to run the clones.
  std::vector<SpawnedClone> clones;
  for (size_t i = 0; i < ids.size(); ++i) {
    SpawnedClone clone;
    clone.id = ids[i];
    clone.pid = pid_;
    if (pidfd_.valid()) {  // else it is gone already (Spawn)
      clone.pidfd.Reset(fcntl(pidfd_.get(), F_DUPFD_CLOEXEC, 0));
      if (!clone.pidfd.valid()) {
        const auto error = FailErrno("duplicating a stand-in's pidfd");
        control_.Reset();
        return error;
      }
    }
    clones.push_back(std::move(clone));
  }
  std::string line = page_server + " " + key;
  for (int32_t id : ids) line += " " + std::to_string(id);
  line += "\n";
  // EPIPE: the stand-in is gone; its clones' channels read EOF and they are LOST.
  for (size_t done = 0; done < line.size();) {
    const ssize_t n = write(control_.get(), line.data() + done, line.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<size_t>(n);
  }
  control_.Reset();
  for (size_t i = 0; i < ids.size(); ++i) clones[i].channel = std::move(channels_[i]);
  channels_.clear();
  return clones;
}

Result<std::string> LocalAddressToward(const std::string& peer) {
  const size_t colon = peer.rfind(':');
  const std::string ip = colon == std::string::npos ? peer : peer.substr(0, colon);
  sockaddr_in to{};
  to.sin_family = AF_INET;
  to.sin_port = htons(9);
  if (inet_pton(AF_INET, ip.c_str(), &to.sin_addr) != 1) {
    return Fail("{}: not an IPv4 address", peer);
  }
  UniqueFd probe(socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!probe.valid()) return FailErrno("socket");
  // A UDP connect sends nothing; it only picks the route and the source address.
  if (connect(probe.get(), reinterpret_cast<sockaddr*>(&to), sizeof to) != 0) {
    return FailErrno(fmt::format("finding the route to {}", peer));
  }
  sockaddr_in local{};
  socklen_t length = sizeof local;
  if (getsockname(probe.get(), reinterpret_cast<sockaddr*>(&local), &length) != 0) {
    return FailErrno("getsockname");
  }
  char text[INET_ADDRSTRLEN] = {};
  inet_ntop(AF_INET, &local.sin_addr, text, sizeof text);
  return fmt::format("{}:0", text);
}

}  // namespace flurry
