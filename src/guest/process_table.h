// ProcessTable: the guest's processes, as every VMM process of one VM sees them.
//
// Each guest process runs in a VMM process of its own: fork(2) in the guest is a fork() of the
// VMM (copy-on-write guest memory, as for a VM clone; src/vmm/vm_process.cc). What the guest's
// processes must know of each other — pids, parents, process groups and sessions, exit
// statuses for wait4, signals sent with kill — lives in one MAP_SHARED anonymous mapping that
// the VM's first process (its init) makes and that every VMM forked from it inherits. The
// mapping holds nothing but integers: no pointers, no host resources, so nothing a guest
// process can make another VMM do goes beyond setting those integers.
//
// Concurrency: several VMM processes use the mapping at once. Every shared field is a
// lock-free std::atomic; a slot changes owner only by compare-and-swap of its state. The
// slot's writers: its own process (its state at exit, its pgid/sid), its parent (reserving it
// at fork, reaping it in wait4, setpgid), any process (signals, wake-ups), an exiting parent
// (re-parenting it to init). Per VMM, a ProcessTable object (move-only) is the view of one
// process: touched only by the VM's run thread, except WakeWord() (the listener thread).
#pragma once

#include <poll.h>
#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <vector>

#include "base/error.h"
#include "base/mapping.h"
#include "base/unique_fd.h"
#include "guest/process_record.h"

namespace flurry {

// One guest process in the shared mapping (64 bytes).
struct SharedProcess {
  enum State : uint32_t { kFree = 0, kReserved = 1, kRunning = 2, kZombie = 3 };
  std::atomic<uint32_t> state;
  std::atomic<int32_t> pid;
  std::atomic<int32_t> ppid;
  std::atomic<int32_t> pgid;
  std::atomic<int32_t> sid;
  std::atomic<int32_t> wait_status;    // kZombie: what wait4 reports
  std::atomic<uint64_t> signals;       // bit (n - 1): signal n sent by another process
  std::atomic<int32_t> sender;         // the pid that sent the last of them
  std::atomic<uint32_t> wake;          // futex word: bumped for every event of this process
  std::atomic<uint32_t> child_events;  // bumped when a child ends
  std::atomic<uint32_t> exit_signal;   // what the parent gets when this process ends
  std::atomic<int32_t> host_pid;       // its VMM's host pid (for a pidfd of an adopted orphan)
  std::atomic<uint32_t> flags;         // kNoZombies
  std::atomic<uint32_t> gather;        // a VM clone asks this process to join (its number)
  uint8_t reserved[4];

  // Its children do not become zombies: they are freed as they end (SIGCHLD ignored, or
  // SA_NOCLDWAIT).
  static constexpr uint32_t kNoZombies = 1;
};
static_assert(sizeof(SharedProcess) == 64);
static_assert(std::atomic<uint64_t>::is_always_lock_free);

class ProcessTable {
 public:
  static constexpr int kMaxProcesses = 512;  // per VM
  static constexpr int32_t kMaxPid = 4'194'303;

  // The table of a new VM whose first process is `init_pid` (made by the VM's first VMM); ids
  // are handed out after `last_id` (the newest thread id the VM already has, or init_pid).
  static Result<ProcessTable> Create(int32_t init_pid, int32_t last_id);
  ProcessTable() = default;  // no table: a VM that has not made one (unit tests)
  ProcessTable(ProcessTable&&) noexcept = default;
  ProcessTable& operator=(ProcessTable&&) noexcept = default;

  bool valid() const { return mapping_.data() != nullptr; }
  int32_t pid() const { return self_pid_; }
  bool is_init() const { return self_ == 0; }

  // A new id for a process or a thread: unique among the VM's processes and threads handed
  // out so far, wrapping at kMaxPid (skipping pids in use).
  int32_t AllocateId();

  // fork: a slot for a child of this process with pid `pid` (its group and session are this
  // process's). EAGAIN when the table is full.
  Result<int> Reserve(int32_t pid, int exit_signal);
  // After the fork: in the parent, the child runs as host process `pidfd` (kept to notice a
  // VMM that dies without reporting); `ok` false gives the slot back.
  void Started(int slot, bool ok, UniqueFd pidfd);
  // In the child: this view becomes the child's, slot `slot`; the parent's children are not
  // its own.
  void BecomeChild(int slot);

  // This process has ended with wait(2) status `wait_status`: its children go to init, it
  // becomes a zombie for its parent, which gets its exit signal and a wake-up.
  void Exit(int wait_status);
  // Init ends: every other process of the VM is told to end (their listeners exit them).
  // (Also the cloning process of a clone of a VM of several processes: the clone ends.)
  void Shutdown();
  // The end of a clone (its cloning process's copy ended): every other process's VMM is killed
  // at once (SIGKILL), so that none of them goes on to see this one end.
  void KillOthers();
  bool ShuttingDown() const;
  // Whether init's VMM is gone (it exited, or was killed).
  bool InitGone() const;
  // In a member copy of a clone: the clone ends with its cloning process's VMM `host_pid`
  // (killed by sf_kill, say), which need not be init. OwnerGone says whether it has.
  Result<void> EndWith(int32_t host_pid);
  bool OwnerGone() const;

  // Signals other processes sent this one since the last call; *sender: the last sender.
  uint64_t TakeSignals(int32_t* sender);
  // kill(2) to other processes: `target` as kill's pid argument (> 0: one process; 0: this
  // process's group; -1: every process but init and this one; < -1: group -target). This
  // process itself is excluded: the caller raises its own signals. Returns how many processes
  // were found (0: ESRCH); `signal` 0 only checks.
  int Send(int32_t target, int signal);

  // Which children a wait4 or waitid waits for.
  struct ChildSelector {
    enum Kind { kAny, kPid, kGroup, kOwnGroup } kind = kAny;
    int32_t id = 0;  // kPid: the pid; kGroup: the group
    // wait4's pid argument: -1 any, > 0 that pid, 0 this process's group, < -1 group -pid.
    static ChildSelector FromWait4(int32_t pid);
  };
  struct Waitable {
    bool any_child = false;  // some child matches (else ECHILD)
    int32_t pid = 0;         // a child that has ended (0: none yet)
    int32_t wait_status = 0;
  };
  // With `reap` the ended child's slot is freed (its pid may then be reused).
  Waitable FindEnded(ChildSelector selector, bool reap);
  Waitable FindEnded(int32_t wait4_pid, bool reap) {
    return FindEnded(ChildSelector::FromWait4(wait4_pid), reap);
  }
  // Children whose VMM ended without reporting (killed from outside) become zombies killed by
  // SIGKILL, and this process gets their exit signal; orphans adopted since the last call are
  // watched from now on (pidfds of their VMMs). Run thread.
  void NoticeDeadChildren();
  // Whether some child of this process runs (any thread: reads only the shared slots).
  bool HasRunningChildren() const;
  // Whether this process's children end without becoming zombies (SIGCHLD's disposition).
  void SetNoZombies(bool no_zombies);
  // The host fds whose readiness means a child may have ended (for a parked wait).
  std::vector<pollfd> ChildEventFds() const;

  // Process groups and sessions (pid 0: this process).
  int32_t ParentPid() const;
  Result<int32_t> GroupOf(int32_t pid) const;
  Result<int32_t> SessionOf(int32_t pid) const;
  Result<void> SetGroup(int32_t pid, int32_t pgid);
  Result<int32_t> NewSession();
  int Count() const;  // processes not reaped, this one included

  // Cloning a VM of several processes (docs/design.md, "Cloning a VM of several processes"):
  // the cloning process starts a gathering, which listens at a name made of `hub_host_pid` and
  // the gathering's number, then asks every other running process to join it: AskToJoin asks
  // those not in `joined` (a process forked meanwhile too), so call it until all have joined.
  struct Gathering {
    int32_t hub_host_pid = 0;
    uint32_t number = 0;
  };
  Gathering StartGathering(int32_t hub_host_pid);
  // One gathering at a time: whether the VMM `host_pid` may start one (none runs, or its owner
  // died); ReleaseGathering when done.
  bool TryOwnGathering(int32_t host_pid);
  void ReleaseGathering(int32_t host_pid);
  void AskToJoin(const Gathering& gathering, const std::vector<int32_t>& joined);
  // The pids of the processes that run (not zombies), this one excluded.
  std::vector<int32_t> OtherRunningPids() const;
  // A gathering this process was asked to join and has not yet (then marked joined).
  std::optional<Gathering> TakeGathering();
  bool GatheringPending() const {
    if (!valid()) return false;
    const uint32_t number = slots()[self_].gather.load(std::memory_order_relaxed);
    return number != 0 && number != joined_gathering_;
  }
  // The table's bytes (taken while every process is stopped: a clone's table is made of them).
  std::vector<uint8_t> Image() const;
  // In a clone of a VM of several processes: a table made of `image` in a new memfd (returned
  // for the clone's other processes to Attach), viewed as process `self_pid`, with the VMMs
  // of the clone's processes (guest pid -> host pid) and no gathering or shutdown pending.
  static Result<std::pair<ProcessTable, UniqueFd>> FromImage(
      const std::vector<uint8_t>& image, int32_t self_pid,
      const std::vector<std::pair<int32_t, int32_t>>& host_pids);
  // The processes of the table `image` as records, in slot order (init first), running and
  // ended ones (a fork under way is not one yet), and the newest id handed out.
  static Result<std::vector<ProcessRecord>> RecordsOf(const std::vector<uint8_t>& image,
                                                      int32_t* last_id);
  // The image of a table holding `records` (init first) with newest id `last_id`: what
  // FromImage makes a table of (a VM of several processes restored from a snapshot). The
  // records must be valid (snapshot/descriptor_validate.cc): at most kMaxProcesses.
  static Result<std::vector<uint8_t>> ImageOf(const std::vector<ProcessRecord>& records,
                                              int32_t last_id);
  // The view of process `self_pid` of the table in `memfd`.
  static Result<ProcessTable> Attach(int memfd, int32_t self_pid);

  // The word the listener thread waits on (FUTEX_WAIT), bumped at every event for this process.
  std::atomic<uint32_t>* WakeWord();
  // Host eventfd readable after an event for this process (the listener writes it; wait4
  // parks on it).
  int event_fd() const { return event_fd_.get(); }
  void DrainEvents();
  void NotifyEvent();

 private:
  struct Header;
  Header* header() const;
  SharedProcess* slots() const;
  SharedProcess* Find(int32_t pid) const;  // a running or zombie process
  void Wake(SharedProcess& process);
  // The children of `pid` go to init; a child already ended is freed if init takes no
  // zombies. Returns whether one had ended (init is to hear of it).
  bool ReparentChildrenOf(int32_t pid);
  // Init has been given orphans of which one had ended: SIGCHLD and a wake-up.
  void TellInitOfOrphans();
  // `process` has ended with `wait_status`: its parent gets its exit signal and a wake-up; it
  // becomes a zombie, or is freed at once if its parent takes no zombies.
  void EndProcess(SharedProcess& process, int wait_status);

  Mapping mapping_;
  int self_ = -1;  // this process's slot
  int32_t self_pid_ = 0;
  UniqueFd event_fd_;
  UniqueFd init_pidfd_;            // init's VMM (inherited by every process)
  UniqueFd owner_pidfd_;           // EndWith's process (this process's only)
  uint32_t joined_gathering_ = 0;  // the last gathering this process joined
  struct Child {
    int32_t pid = 0;
    UniqueFd pidfd;
  };
  std::vector<Child> children_;  // this process's children not reaped, with their VMMs' pidfds
};

}  // namespace flurry
