// Cloning a VM of several processes: the messages between the VMMs of the guest's processes
// and their copies (docs/protocols/vm_gathering.md; docs/design.md, "Cloning a VM of several
// processes").
//
// Each guest process runs in a VMM of its own. At sf_clone the cloning VMM (the hub) listens
// on an abstract unix socket and asks every other process, through the process table, to
// join: each stops its guest, forks a snapshot of itself (the "copier") and says HELLO with
// its pipes; the hub copies the pipes' bytes and the process table while all are stopped,
// then sends RELEASE (they run on). For clone N the hub's snapshot process listens at a
// rendezvous socket and sends SPAWN N to every copier, which forks a copy of its process;
// the copy says REGISTER there, and the cloning process's copy answers each with SETUP: the
// clone's process table (a memfd) and its pipes.
//
// Sockets are SOCK_SEQPACKET, one message a packet, fds by SCM_RIGHTS. Every message is
// checked (magic, version, size, type, counts) before use: a peer is another VMM of the same
// VM, but nothing it sends may crash the receiver.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace flurry {

inline constexpr uint32_t kGatherMagic = 0x47594c46;  // "FLYG"
inline constexpr uint16_t kGatherVersion = 2;
// Pipes one process may hold for a clone of a VM of several processes (SETUP carries two fds
// each, under SCM_MAX_FD = 253).
inline constexpr uint32_t kMaxGatherPipes = 64;

struct GatherMessage {
  static constexpr uint32_t kSpawnDetached = 1;  // kSpawn's count: the copy outlives its copier
  enum Type : uint16_t {
    kHello = 1,     // process -> hub: pid, count pipe ids, one fd (an end) per pipe
    kRelease = 2,   // hub -> copier: every process has stopped; run on (also: restored, run)
    kSpawn = 3,     // hub's snapshot -> copier: fork a copy for clone `clone_id`
    kRegister = 4,  // copy -> rendezvous: pid, host_pid
    kSetup = 5,     // rendezvous -> copy: fds [table memfd, then read, write end per pipe id]
    kWrite = 6,     // hub -> copier: write the process's snapshot into the directory (one fd)
    kWritten = 7,   // copier -> hub: done (clone_id 0), or failed (clone_id: an errno)
    kRestored = 8,  // a restored process -> init: ready to run (then kRelease: run)
  };
  uint32_t magic = kGatherMagic;
  uint16_t version = kGatherVersion;
  uint16_t type = 0;
  int32_t pid = 0;       // the guest pid of the process (kHello, kRegister)
  int32_t host_pid = 0;  // kRegister: the copy's VMM; kSpawn: the rendezvous's owner;
                         // kSetup: the cloning copy's VMM
  int32_t clone_id = 0;  // kSpawn; kWritten: 0, or the errno of the failure
  uint32_t count = 0;    // kHello, kSetup: pipe ids in `ids`; kSpawn: kSpawnDetached or 0
  // kWrite: the VM's clock at the snapshot instant (guest CLOCK_MONOTONIC, host
  // CLOCK_REALTIME), recorded in every process's descriptor. kSetup of a VM restored from a
  // snapshot: `clock_ns` is the monotonic offset of the VM's clocks, one for all of
  // its processes; 0 in a clone (its processes keep the offset they inherited).
  int64_t clock_ns = 0;
  int64_t realtime_ns = 0;
  uint64_t ids[kMaxGatherPipes] = {};
};
static_assert(sizeof(GatherMessage) == 40 + 8 * kMaxGatherPipes);

// The abstract socket names: the hub's gathering, and clone `clone_id`'s rendezvous (clone
// 0: the processes of a VM restored from a snapshot, whose init's VMM is the owner).
std::string GatheringName(int32_t hub_host_pid, uint32_t number);
std::string RendezvousName(int32_t owner_host_pid, int32_t clone_id);

Result<UniqueFd> ListenAt(const std::string& name);
Result<UniqueFd> ConnectTo(const std::string& name);
// A connection on `listener` within `timeout` (an error after it). Abstract sockets have no
// permissions: a peer of another user is refused (SO_PEERCRED).
Result<UniqueFd> AcceptWithin(int listener, std::chrono::milliseconds timeout);
// The host pid of the process at the other end of `socket` (when it connected).
Result<pid_t> PeerPid(int socket);

Result<void> SendGatherMessage(int socket, const GatherMessage& message,
                               const std::vector<int>& fds = {});
// The next message, with its fds, within `timeout`; EOF is an error. Checks the header, the
// type (`expected`) and the counts.
Result<GatherMessage> ReceiveGatherMessage(int socket, GatherMessage::Type expected,
                                           std::chrono::milliseconds timeout,
                                           std::vector<UniqueFd>* fds = nullptr);
// The same, for a message of any of the types `expected`.
Result<GatherMessage> ReceiveGatherMessageOf(int socket,
                                             std::initializer_list<GatherMessage::Type> expected,
                                             std::chrono::milliseconds timeout,
                                             std::vector<UniqueFd>* fds = nullptr);

}  // namespace flurry
