#include "fork/snapshot_server.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cstring>

#include "base/fd_passing.h"

namespace flurry {
namespace {

bool SendReply(int control, const SpawnReply& reply, int channel_fd, int pidfd) {
  // Never lose a clone's outcome channel, even without a pidfd.
  std::vector<int> fds;
  if (channel_fd >= 0) fds.push_back(channel_fd);
  if (channel_fd >= 0 && pidfd >= 0) fds.push_back(pidfd);
  return SendWithFds(control, std::span(reinterpret_cast<const uint8_t*>(&reply), sizeof reply),
                     fds)
      .has_value();
}

SpawnReply Reply(SpawnReply::Type type, int32_t id, int32_t pid, int32_t error) {
  return SpawnReply{kSnapshotMagic, kSnapshotVersion, type, id, pid, error, 0};
}

// Forks `count` clones. Returns true (with *start filled) in a clone.
bool SpawnBatch(int control, int32_t first_id, int32_t count, bool detached, ForkHooks& hooks,
                CloneStart* start) {
  const pid_t server = getpid();
  for (int32_t i = 0; i < count; ++i) {
    int channel[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, channel) != 0) {
      SendReply(control, Reply(SpawnReply::kError, first_id + i, 0, errno), -1, -1);
      return false;
    }
    // The clone waits at `gate` until its pidfd exists: a clone that ended at once would
    // otherwise be reaped (SIGCHLD is ignored here) before pidfd_open could name it.
    int gate[2];
    if (pipe2(gate, O_CLOEXEC) != 0) {
      int err = errno;
      close(channel[0]);
      close(channel[1]);
      SendReply(control, Reply(SpawnReply::kError, first_id + i, 0, err), -1, -1);
      return false;
    }
    Result<pid_t> forked = std::unexpected(Error(0, ""));
    if (Result<void> ready = hooks.BeforeSpawn(first_id + i, detached); !ready) {
      forked = std::unexpected(ready.error());
    } else {
      forked = ForkWithHooks(hooks, /*tied_to_parent=*/!detached);
    }
    if (!forked) {
      hooks.AfterSpawn();
      const int err = forked.error().code_or(EIO);
      for (int fd : {channel[0], channel[1], gate[0], gate[1]}) close(fd);
      SendReply(control, Reply(SpawnReply::kError, first_id + i, 0, err), -1, -1);
      return false;
    }
    const pid_t pid = *forked;
    if (pid == 0) {
      if (!detached) {
        // Die with the snapshot process (and so with the VMM that owns it).
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != server) _exit(1);  // it died before we asked
      }
      close(gate[1]);
      char go;
      while (read(gate[0], &go, 1) < 0 && errno == EINTR) {
      }
      close(gate[0]);
      close(channel[0]);
      close(control);
      start->id = first_id + i;
      start->channel.Reset(channel[1]);
      return true;
    }
    hooks.AfterSpawn();
    close(channel[1]);
    close(gate[0]);
    int pidfd = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    (void)!write(gate[1], "g", 1);
    close(gate[1]);
    SendReply(control, Reply(SpawnReply::kClone, first_id + i, pid, 0), channel[0], pidfd);
    close(channel[0]);
    if (pidfd >= 0) close(pidfd);
  }
  SendReply(control, Reply(SpawnReply::kDone, 0, 0, 0), -1, -1);
  return false;
}

}  // namespace

Result<pid_t> ForkWithHooks(ForkHooks& hooks, bool tied_to_parent) {
  FLURRY_TRY(hooks.PrepareFork(tied_to_parent));
  const pid_t pid = fork();
  if (pid < 0) {
    const int err = errno;
    hooks.AfterForkInParent(/*child_exists=*/false);
    return FailErrno(err, "fork");
  }
  if (pid > 0) {
    hooks.AfterForkInParent(/*child_exists=*/true);
    return pid;
  }
  if (auto r = hooks.AfterForkInChild(); !r) {
    std::string line = "flurry: " + r.error().message() + "\n";
    (void)!::write(2, line.data(), line.size());
    _exit(1);
  }
  return pid_t{0};
}

CloneStart RunSnapshotServer(UniqueFd control_fd, int32_t initial_first_id, int32_t initial_count,
                             bool detached, ForkHooks& hooks) {
  const int control = control_fd.get();
  // Clones are auto-reaped; the snapshot dies with its owner.
  signal(SIGCHLD, SIG_IGN);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  prctl(PR_SET_NAME, "flurry-snapshot");
  hooks.ForgetGuestPipes();
  CloneStart start;
  if (initial_count > 0) {
    if (SpawnBatch(control, initial_first_id, initial_count, detached, hooks, &start)) {
      control_fd.Release();  // closed in SpawnBatch
      return start;
    }
    if (detached) {
      hooks.ReleaseGuest();
      _exit(0);
    }
  }
  for (;;) {
    SpawnRequest request{};
    // MSG_TRUNC: the whole message's length, so that an over-long request is rejected too.
    ssize_t n = recv(control, &request, sizeof request, MSG_TRUNC);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {  // the owner is gone
      hooks.ReleaseGuest();
      _exit(0);
    }
    if (n != sizeof request || request.magic != kSnapshotMagic ||
        request.version != kSnapshotVersion || request.op != 1 || request.count < 1 ||
        request.count > kMaxSpawnCount) {
      SendReply(control, Reply(SpawnReply::kError, 0, 0, EINVAL), -1, -1);
      continue;
    }
    if (SpawnBatch(control, request.first_id, request.count, detached, hooks, &start)) {
      control_fd.Release();
      return start;
    }
  }
}

Result<void> SendSpawnRequest(int control, int32_t first_id, int32_t count) {
  SpawnRequest request{kSnapshotMagic, kSnapshotVersion, 1, first_id, count};
  ssize_t n;
  do {
    n = send(control, &request, sizeof request, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n != sizeof request) return FailErrno("asking the snapshot process for clones");
  return {};
}

Result<std::vector<SpawnedClone>> ReceiveSpawnReplies(int control, int32_t expected) {
  std::vector<SpawnedClone> clones;
  for (;;) {
    SpawnReply reply{};
    std::vector<UniqueFd> fds;
    auto n =
        ReceiveWithFds(control, std::span(reinterpret_cast<uint8_t*>(&reply), sizeof reply), &fds);
    if (!n && n.error().code() != EMSGSIZE) {
      return std::unexpected(n.error().WithContext("reading from the snapshot process"));
    }
    if (n && *n == 0) {
      if (static_cast<int32_t>(clones.size()) == expected) return clones;
      return Fail("the snapshot process ended after spawning {} of {} clones", clones.size(),
                  expected);
    }
    if (!n || *n != sizeof reply || reply.magic != kSnapshotMagic ||
        reply.version != kSnapshotVersion || fds.size() > 2) {
      return Fail("malformed reply from the snapshot process");
    }
    fds.resize(2);  // the channel, then the pidfd (either may be missing)
    UniqueFd channel = std::move(fds[0]), pidfd = std::move(fds[1]);
    if (reply.type == SpawnReply::kDone) return clones;
    if (reply.type == SpawnReply::kError) {
      if (!clones.empty()) return clones;
      return FailErrno(reply.error, "spawning clones");
    }
    if (reply.type != SpawnReply::kClone || !channel.valid()) {
      return Fail("malformed clone reply from the snapshot process");
    }
    clones.push_back(SpawnedClone{reply.id, reply.pid, std::move(channel), std::move(pidfd)});
    if (static_cast<int32_t>(clones.size()) > expected) {
      return Fail("the snapshot process spawned more clones than asked");
    }
  }
}

}  // namespace flurry
