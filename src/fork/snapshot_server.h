// The snapshot process: a fork() of a VMM at the instant of sf_clone or sf_checkpoint_parent.
// Its memory is the frozen, copy-on-write image of the VM at that instant (the parent VMM goes
// on at once); it forks the clones, each of which resumes from that image. For sf_clone it
// spawns the ticket's clones, then serves spawn requests until the ticket is released (its
// clones die with it); for a checkpoint it waits for spawn requests until its owner goes away;
// for host-initiated (detached) clones it exits once they are spawned. Later issues make it the
// memory server for clones on other hosts.
//
// Control protocol (SOCK_SEQPACKET socketpair between the owner VMM and the snapshot process),
// documented in docs/protocols/snapshot_server.md:
//   owner -> snapshot: SpawnRequest{first_id, count}
//   snapshot -> owner: per clone SpawnReply{kClone, id, pid} + SCM_RIGHTS [outcome channel,
//                      pidfd]; then SpawnReply{kDone} (or kError with an errno)
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace flurry {

struct SpawnRequest {
  uint32_t magic;
  uint16_t version;
  uint16_t op;
  int32_t first_id;
  int32_t count;
};
static_assert(sizeof(SpawnRequest) == 16);

struct SpawnReply {
  enum Type : uint16_t { kClone = 1, kDone = 2, kError = 3 };
  uint32_t magic;
  uint16_t version;
  uint16_t type;
  int32_t id;
  int32_t pid;
  int32_t error;
  int32_t reserved;
};
static_assert(sizeof(SpawnReply) == 24);

inline constexpr uint32_t kSnapshotMagic = 0x53594c46;  // "FLYS"
inline constexpr uint16_t kSnapshotVersion = 1;
inline constexpr int32_t kMaxSpawnCount = 4096;

// What the processes that fork() a VMM do around it, so that the backend can give the new
// process a copy-on-write copy of the guest (backend.h: PrepareFork/AfterFork*). The Vm
// implements it (through ForkHost).
class ForkHooks {
 public:
  virtual ~ForkHooks() = default;
  virtual Result<void> PrepareFork(bool tied_to_parent) = 0;
  virtual void AfterForkInParent(bool child_exists) = 0;
  virtual Result<void> AfterForkInChild() = 0;
  // Before a process that holds a guest image ends with _exit().
  virtual void ReleaseGuest() = 0;
  // In a process that holds a guest image for clones to be made from (a snapshot process, a
  // copier): the guest's pipe ends go (the clones make their pipes from what was captured),
  // so that a pipe of the running VM sees end of file when the VM closes its last writer.
  virtual void ForgetGuestPipes() {}
  // In the snapshot process, around the fork of clone `id`: a VM of several processes has the
  // copies of its other processes made (vm_gathering.h). An error fails that clone.
  // `detached`: the clone outlives the snapshot process (flurry ctl clone).
  virtual Result<void> BeforeSpawn(int32_t id, bool detached) {
    (void)id;
    (void)detached;
    return {};
  }
  virtual void AfterSpawn() {}
};

// fork() with the hooks around it: returns the pid (0 in the child) or an error; an error in
// the child's hook ends the child (it never returns there).
Result<pid_t> ForkWithHooks(ForkHooks& hooks, bool tied_to_parent);

// What a freshly forked clone starts with.
struct CloneStart {
  int32_t id = 0;
  UniqueFd channel;  // write end of its outcome channel
};

// Runs in the snapshot process and never returns there: it _exit()s when done. It returns only
// in a clone it forked. With initial_count > 0 it first spawns [initial_first_id, +count)
// (sf_clone); then it serves SpawnRequests until `control` reaches EOF, i.e. until its owner
// releases it or dies.
//
// Lifetimes: the snapshot process dies with its owner (PR_SET_PDEATHSIG), and its clones die
// with it, so killing a clone VMM ends that clone's own clones too, all the way down. With
// `detached` (host-initiated clones) the clones outlive it and it exits once they are spawned.
CloneStart RunSnapshotServer(UniqueFd control, int32_t initial_first_id, int32_t initial_count,
                             bool detached, ForkHooks& hooks);

// Owner side: the clones one spawn produced.
struct SpawnedClone {
  int32_t id = 0;
  pid_t pid = 0;
  UniqueFd channel;  // read end of the outcome channel
  UniqueFd pidfd;
};
Result<void> SendSpawnRequest(int control, int32_t first_id, int32_t count);
// Reads replies until kDone/kError/EOF. Clones spawned before an error are still returned.
Result<std::vector<SpawnedClone>> ReceiveSpawnReplies(int control, int32_t expected);

}  // namespace flurry
