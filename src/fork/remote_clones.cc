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

extern char** environ;

namespace flurry {

void OwnedProcess::Kill() {
  if (pidfd_.valid()) syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
  pidfd_.Reset();
}

std::vector<std::string> RemoteCloneCommandLine(const RemoteCloneConfig& config,
                                                const std::string& host,
                                                const std::string& page_server, uint64_t family_id,
                                                const std::vector<int32_t>& ids) {
  std::vector<std::string> argv = {config.remote_binary,
                                   "--cluster",
                                   config.cluster_file,
                                   "--member",
                                   config.member,
                                   "--host",
                                   host,
                                   "--page-server",
                                   page_server,
                                   "--family",
                                   fmt::format("{:x}", family_id),
                                   "--first-outcome-fd",
                                   "3",
                                   "--parent-pid",
                                   std::to_string(getpid())};
  for (int32_t id : ids) {
    argv.push_back("--clone-id");
    argv.push_back(std::to_string(id));
  }
  if (!config.prefix_output) argv.push_back("--no-clone-prefix");
  if (config.memory_stats) argv.push_back("--memory-stats");
  if (config.prefetch_pages != 0) {
    argv.push_back("--prefetch");
    argv.push_back(std::to_string(config.prefetch_pages));
  }
  return argv;
}

Result<std::vector<SpawnedClone>> StartRemoteClones(
    const RemoteCloneConfig& config, const std::string& host, const std::string& page_server,
    const std::string& page_server_key, uint64_t family_id, const std::vector<int32_t>& ids) {
  const std::vector<std::string> args =
      RemoteCloneCommandLine(config, host, page_server, family_id, ids);
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  // One outcome channel per clone; the stand-in gets the write ends as fds 3, 4, ...
  std::vector<UniqueFd> read_ends, write_ends;
  for (size_t i = 0; i < ids.size(); ++i) {
    int channel[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0) {
      return FailErrno("the outcome channel of a remote clone");
    }
    read_ends.emplace_back(channel[0]);
    write_ends.emplace_back(channel[1]);
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  // The write ends may sit on low numbers that a dup2 below overwrites: move them out first.
  std::vector<int> high;
  for (const UniqueFd& end : write_ends) {
    const int moved = fcntl(end.get(), F_DUPFD_CLOEXEC, 3 + static_cast<int>(ids.size()));
    if (moved < 0) {
      for (int fd : high) close(fd);
      posix_spawn_file_actions_destroy(&actions);
      return FailErrno("moving an outcome channel");
    }
    high.push_back(moved);
  }
  for (size_t i = 0; i < high.size(); ++i) {
    posix_spawn_file_actions_adddup2(&actions, high[i], 3 + static_cast<int>(i));  // clears CLOEXEC
  }
  posix_spawnattr_t attributes;
  posix_spawnattr_init(&attributes);
  sigset_t none;
  sigemptyset(&none);
  posix_spawnattr_setsigmask(&attributes, &none);
  sigset_t defaults;
  sigfillset(&defaults);
  posix_spawnattr_setsigdefault(&attributes, &defaults);
  posix_spawnattr_setflags(&attributes, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  // This environment, with FLURRY_PAGE_KEY set to the key.
  std::vector<std::string> environment;
  for (char** e = environ; *e != nullptr; ++e) {
    if (!std::string_view(*e).starts_with("FLURRY_PAGE_KEY=")) environment.emplace_back(*e);
  }
  environment.push_back("FLURRY_PAGE_KEY=" + page_server_key);
  std::vector<char*> envp;
  for (std::string& e : environment) envp.push_back(e.data());
  envp.push_back(nullptr);
  pid_t pid = 0;
  const int err = posix_spawn(&pid, argv[0], &actions, &attributes, argv.data(), envp.data());
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attributes);
  for (int fd : high) close(fd);
  if (err != 0) return FailErrno(err, fmt::format("starting {}", config.remote_binary));

  UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd.valid()) return FailErrno("pidfd_open for a remote clones' stand-in");
  std::vector<SpawnedClone> clones;
  for (size_t i = 0; i < ids.size(); ++i) {
    SpawnedClone clone;
    clone.id = ids[i];
    clone.pid = pid;
    clone.channel = std::move(read_ends[i]);
    clone.pidfd.Reset(fcntl(pidfd.get(), F_DUPFD_CLOEXEC, 0));
    if (!clone.pidfd.valid()) return FailErrno("duplicating a stand-in's pidfd");
    clones.push_back(std::move(clone));
  }
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
