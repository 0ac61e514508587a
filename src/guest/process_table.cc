#include "guest/process_table.h"

#include <linux/futex.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>

#include "guest/process_table_layout.h"

namespace flurry {

namespace {

using process_table_layout::kTableBytes;
using process_table_layout::Live;

// Whether the process `p` is one that kill's `selector` picks (see Send).
bool Selected(const SharedProcess& p, int32_t selector, int32_t own_group) {
  if (selector > 0) return p.pid.load() == selector;
  if (selector == 0) return p.pgid.load() == own_group;
  if (selector == -1) return true;
  return p.pgid.load() == -selector;
}

bool Selected(const SharedProcess& p, ProcessTable::ChildSelector selector, int32_t own_group) {
  switch (selector.kind) {
    case ProcessTable::ChildSelector::kAny:
      return true;
    case ProcessTable::ChildSelector::kPid:
      return p.pid.load() == selector.id;
    case ProcessTable::ChildSelector::kGroup:
      return p.pgid.load() == selector.id;
    case ProcessTable::ChildSelector::kOwnGroup:
      return p.pgid.load() == own_group;
  }
  return false;
}

}  // namespace

ProcessTable::ChildSelector ProcessTable::ChildSelector::FromWait4(int32_t pid) {
  if (pid == -1) return {kAny, 0};
  if (pid > 0) return {kPid, pid};
  if (pid == 0) return {kOwnGroup, 0};
  return {kGroup, -pid};
}

ProcessTable::Header* ProcessTable::header() const {
  return reinterpret_cast<Header*>(mapping_.data());
}
SharedProcess* ProcessTable::slots() const {
  return reinterpret_cast<SharedProcess*>(mapping_.data() + sizeof(Header));
}

Result<ProcessTable> ProcessTable::Create(int32_t init_pid, int32_t last_id) {
  static_assert(sizeof(Header) == 64);
  ProcessTable table;
  table.mapping_ = FLURRY_TRY_CTX(Mapping::SharedAnonymous(kTableBytes), "the process table");
  table.event_fd_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!table.event_fd_.valid()) return FailErrno(errno, "eventfd for process events");
  // Every process inherits this: poll says when init's VMM is gone.
  table.init_pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0)));
  if (!table.init_pidfd_.valid()) return FailErrno(errno, "pidfd_open of the VMM");
  table.header()->last_id.store(std::max(init_pid, last_id));
  SharedProcess& init = table.slots()[0];
  init.pid.store(init_pid);
  init.ppid.store(0);
  init.pgid.store(init_pid);
  init.sid.store(init_pid);
  init.host_pid.store(getpid());
  init.state.store(SharedProcess::kRunning);
  table.self_ = 0;
  table.self_pid_ = init_pid;
  return table;
}

ProcessTable::Gathering ProcessTable::StartGathering(int32_t hub_host_pid) {
  Gathering gathering{hub_host_pid, header()->gather_number.fetch_add(1) + 1};
  if (gathering.number == 0) gathering.number = header()->gather_number.fetch_add(1) + 1;
  header()->gather_host_pid.store(hub_host_pid);
  return gathering;
}

void ProcessTable::AskToJoin(const Gathering& gathering, const std::vector<int32_t>& joined) {
  for (int i = 0; i < kMaxProcesses; ++i) {
    SharedProcess& p = slots()[i];
    if (i == self_ || p.state.load() != SharedProcess::kRunning) continue;
    if (std::find(joined.begin(), joined.end(), p.pid.load()) != joined.end()) continue;
    if (p.gather.exchange(gathering.number) != gathering.number) Wake(p);
  }
}

bool ProcessTable::TryOwnGathering(int32_t host_pid) {
  std::atomic<int32_t>& owner = header()->gather_owner;
  int32_t current = 0;
  if (owner.compare_exchange_strong(current, host_pid)) return true;
  // An owner that died while gathering (killed) holds nothing any more.
  if (current != host_pid && kill(current, 0) != 0 && errno == ESRCH) {
    return owner.compare_exchange_strong(current, host_pid);
  }
  return false;
}

void ProcessTable::ReleaseGathering(int32_t host_pid) {
  int32_t mine = host_pid;
  header()->gather_owner.compare_exchange_strong(mine, 0);
}

std::vector<int32_t> ProcessTable::OtherRunningPids() const {
  std::vector<int32_t> pids;
  if (!valid()) return pids;
  for (int i = 0; i < kMaxProcesses; ++i) {
    const SharedProcess& p = slots()[i];
    if (i != self_ && p.state.load() == SharedProcess::kRunning) pids.push_back(p.pid.load());
  }
  return pids;
}

std::optional<ProcessTable::Gathering> ProcessTable::TakeGathering() {
  if (!valid()) return std::nullopt;
  const uint32_t number = slots()[self_].gather.load(std::memory_order_relaxed);
  if (number == 0 || number == joined_gathering_) return std::nullopt;
  joined_gathering_ = number;
  return Gathering{header()->gather_host_pid.load(), number};
}

Result<ProcessTable> ProcessTable::Attach(int memfd, int32_t self_pid) {
  struct stat st {};
  if (fstat(memfd, &st) != 0 || static_cast<size_t>(st.st_size) != kTableBytes) {
    return Fail("the clone's process table is not {} bytes", kTableBytes);
  }
  ProcessTable table;
  table.mapping_ = FLURRY_TRY_CTX(Mapping::Shared(memfd, kTableBytes, PROT_READ | PROT_WRITE),
                                  "the clone's process table");
  table.self_ = -1;
  for (int i = 0; i < kMaxProcesses; ++i) {
    if (table.slots()[i].state.load() == SharedProcess::kRunning &&
        table.slots()[i].pid.load() == self_pid) {
      table.self_ = i;
    }
  }
  if (table.self_ < 0) return Fail("process {} is not in the clone's process table", self_pid);
  table.self_pid_ = self_pid;
  table.slots()[table.self_].host_pid.store(getpid());
  table.event_fd_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!table.event_fd_.valid()) return FailErrno(errno, "eventfd for process events");
  const int32_t init_host = table.slots()[0].host_pid.load();
  if (table.self_ != 0) {
    table.init_pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, init_host, 0)));
    if (!table.init_pidfd_.valid()) return FailErrno(errno, "pidfd_open of the clone's init");
  } else {
    table.init_pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, getpid(), 0)));
  }
  table.NoticeDeadChildren();  // watches the VMMs of its children
  return table;
}

SharedProcess* ProcessTable::Find(int32_t pid) const {
  if (!valid() || pid <= 0) return nullptr;
  for (int i = 0; i < kMaxProcesses; ++i) {
    SharedProcess& p = slots()[i];
    if (Live(p) && p.pid.load() == pid) return &p;
  }
  return nullptr;
}

int32_t ProcessTable::AllocateId() {
  for (;;) {
    int32_t last = header()->last_id.load();
    const int32_t next = last >= kMaxPid || last < 1 ? 2 : last + 1;
    if (!header()->last_id.compare_exchange_weak(last, next)) continue;
    if (Find(next) == nullptr) return next;
  }
}

Result<int> ProcessTable::Reserve(int32_t pid, int exit_signal) {
  const SharedProcess& self = slots()[self_];
  for (int i = 0; i < kMaxProcesses; ++i) {
    SharedProcess& p = slots()[i];
    uint32_t expected = SharedProcess::kFree;
    if (!p.state.compare_exchange_strong(expected, SharedProcess::kReserved)) continue;
    p.pid.store(pid);
    p.ppid.store(self_pid_);
    p.pgid.store(self.pgid.load());
    p.sid.store(self.sid.load());
    p.wait_status.store(0);
    p.signals.store(0);
    p.sender.store(0);
    p.child_events.store(0);
    p.exit_signal.store(static_cast<uint32_t>(exit_signal));
    p.host_pid.store(0);
    p.gather.store(0);
    p.flags.store(self.flags.load());  // a fork keeps SIGCHLD's disposition
    return i;
  }
  return FailErrno(EAGAIN, "the VM's process table is full");
}

void ProcessTable::Started(int slot, bool ok, UniqueFd pidfd) {
  SharedProcess& p = slots()[slot];
  if (!ok) {
    p.state.store(SharedProcess::kFree);
    return;
  }
  // The child may have ended already (it then made itself a zombie).
  uint32_t expected = SharedProcess::kReserved;
  p.state.compare_exchange_strong(expected, SharedProcess::kRunning);
  children_.push_back(Child{p.pid.load(), std::move(pidfd)});
}

void ProcessTable::BecomeChild(int slot) {
  children_.clear();
  self_ = slot;
  self_pid_ = slots()[slot].pid.load();
  slots()[slot].host_pid.store(getpid());
  uint32_t expected = SharedProcess::kReserved;
  slots()[slot].state.compare_exchange_strong(expected, SharedProcess::kRunning);
  // The parent's eventfd is the parent's: this process gets its own.
  event_fd_.Reset(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
}

void ProcessTable::Wake(SharedProcess& process) {
  process.wake.fetch_add(1);
  syscall(SYS_futex, &process.wake, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
}

bool ProcessTable::ReparentChildrenOf(int32_t pid) {
  SharedProcess& init = slots()[0];
  const bool init_takes_zombies = (init.flags.load() & SharedProcess::kNoZombies) == 0;
  bool ended = false;
  for (int i = 0; i < kMaxProcesses; ++i) {
    SharedProcess& p = slots()[i];
    if (!Live(p) || p.ppid.load() != pid || p.pid.load() == pid) continue;
    p.ppid.store(init.pid.load());
    p.exit_signal.store(SIGCHLD);  // as Linux: init hears SIGCHLD, whatever clone asked
    if (p.state.load() != SharedProcess::kZombie) continue;
    if (init_takes_zombies) {
      ended = true;
    } else {
      uint32_t zombie = SharedProcess::kZombie;
      p.state.compare_exchange_strong(zombie, SharedProcess::kFree);
    }
  }
  return ended;
}

void ProcessTable::EndProcess(SharedProcess& process, int wait_status) {
  // Read before the slot may be freed (and taken by another fork).
  const int32_t pid = process.pid.load();
  const uint32_t signal = process.exit_signal.load();
  const bool is_init = &process == &slots()[0];
  process.wait_status.store(wait_status);
  int32_t ppid = process.ppid.load();
  SharedProcess* parent = Find(ppid);
  const bool zombie = parent == nullptr || (parent->flags.load() & SharedProcess::kNoZombies) == 0;
  process.state.store(zombie ? SharedProcess::kZombie : SharedProcess::kFree);
  if (is_init) return;
  // The parent may have ended meanwhile and handed this process to init: whoever its parent
  // is now hears of it (twice at worst: a wait finds one zombie).
  for (int tries = 0; tries < 2; ++tries) {
    if (parent != nullptr) {
      if (signal > 0 && signal <= 64) {
        parent->sender.store(pid);
        parent->signals.fetch_or(uint64_t{1} << (signal - 1));
      }
      parent->child_events.fetch_add(1);
      Wake(*parent);
    }
    if (!zombie) return;  // freed: nobody waits for it
    const int32_t now = process.ppid.load();
    if (now == ppid || process.pid.load() != pid) return;
    ppid = now;
    parent = Find(ppid);
  }
}

void ProcessTable::Exit(int wait_status) {
  if (!valid()) return;
  // Orphans go to init (slot 0), which learns of those already ended.
  if (ReparentChildrenOf(self_pid_) && self_ != 0) TellInitOfOrphans();
  EndProcess(slots()[self_], wait_status);
}

void ProcessTable::TellInitOfOrphans() {
  SharedProcess& init = slots()[0];
  // As Linux's reparenting: init gets SIGCHLD for an orphan that has already ended.
  init.sender.store(0);
  init.signals.fetch_or(uint64_t{1} << (SIGCHLD - 1));
  init.child_events.fetch_add(1);
  Wake(init);
}

void ProcessTable::SetNoZombies(bool no_zombies) {
  if (!valid()) return;
  std::atomic<uint32_t>& flags = slots()[self_].flags;
  if (no_zombies) {
    flags.fetch_or(SharedProcess::kNoZombies);
  } else {
    flags.fetch_and(~SharedProcess::kNoZombies);
  }
}

bool ProcessTable::HasRunningChildren() const {
  if (!valid()) return false;
  for (int i = 0; i < kMaxProcesses; ++i) {
    const SharedProcess& p = slots()[i];
    if (p.state.load() == SharedProcess::kRunning && p.ppid.load() == self_pid_ && i != self_) {
      return true;
    }
  }
  return false;
}

void ProcessTable::Shutdown() {
  if (!valid()) return;
  header()->shutdown.store(1);
  for (int i = 0; i < kMaxProcesses; ++i) {
    if (i != self_ && Live(slots()[i])) Wake(slots()[i]);
  }
}

void ProcessTable::KillOthers() {
  if (!valid()) return;
  for (int i = 0; i < kMaxProcesses; ++i) {
    const SharedProcess& p = slots()[i];
    const int32_t host = p.host_pid.load();
    if (i == self_ || p.state.load() != SharedProcess::kRunning || host <= 0) continue;
    UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, host, 0)));
    if (pidfd.valid()) syscall(SYS_pidfd_send_signal, pidfd.get(), SIGKILL, nullptr, 0);
  }
}

bool ProcessTable::ShuttingDown() const { return valid() && header()->shutdown.load() != 0; }

Result<void> ProcessTable::EndWith(int32_t host_pid) {
  owner_pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, host_pid, 0)));
  if (!owner_pidfd_.valid()) return FailErrno(errno, "pidfd_open of the clone's cloning process");
  return {};
}

bool ProcessTable::OwnerGone() const {
  if (!owner_pidfd_.valid()) return false;
  pollfd pfd{owner_pidfd_.get(), POLLIN, 0};
  return poll(&pfd, 1, 0) > 0;
}

bool ProcessTable::InitGone() const {
  if (!init_pidfd_.valid() || is_init()) return false;
  pollfd pfd{init_pidfd_.get(), POLLIN, 0};
  return poll(&pfd, 1, 0) > 0;
}

uint64_t ProcessTable::TakeSignals(int32_t* sender) {
  if (!valid()) return 0;
  SharedProcess& self = slots()[self_];
  if (self.signals.load() == 0) return 0;
  if (sender != nullptr) *sender = self.sender.load();
  return self.signals.exchange(0);
}

int ProcessTable::Send(int32_t target, int signal) {
  if (!valid()) return 0;
  const int32_t own_group = slots()[self_].pgid.load();
  const int32_t init_pid = slots()[0].pid.load();
  int found = 0;
  for (int i = 0; i < kMaxProcesses; ++i) {
    SharedProcess& p = slots()[i];
    if (i == self_ || !Live(p) || !Selected(p, target, own_group)) continue;
    if (target == -1 && p.pid.load() == init_pid) continue;
    ++found;
    if (signal == 0 || p.state.load() != SharedProcess::kRunning) continue;
    p.sender.store(self_pid_);
    p.signals.fetch_or(uint64_t{1} << (signal - 1));
    Wake(p);
  }
  return found;
}

void ProcessTable::NoticeDeadChildren() {
  if (!valid()) return;
  // Orphans adopted since the last look (init only, in practice): watch their VMMs too. A VMM
  // already gone (ESRCH) is a child that ended without reporting.
  for (int i = 0; i < kMaxProcesses; ++i) {
    SharedProcess& p = slots()[i];
    const int32_t pid = p.pid.load();
    if (i == self_ || p.state.load() != SharedProcess::kRunning || p.ppid.load() != self_pid_ ||
        std::any_of(children_.begin(), children_.end(),
                    [pid](const Child& c) { return c.pid == pid; })) {
      continue;
    }
    const int32_t host = p.host_pid.load();
    if (host <= 0) continue;  // still starting: its parent watches it
    UniqueFd pidfd(static_cast<int>(syscall(SYS_pidfd_open, host, 0)));
    if (!pidfd.valid() && errno != ESRCH) continue;
    if (!pidfd.valid()) pidfd.Reset(eventfd(1, EFD_CLOEXEC));  // readable: already gone
    children_.push_back(Child{pid, std::move(pidfd)});
  }
  for (Child& child : children_) {
    if (!child.pidfd.valid()) continue;
    pollfd pfd{child.pidfd.get(), POLLIN, 0};
    if (poll(&pfd, 1, 0) <= 0) continue;
    child.pidfd.Reset();  // its VMM is gone: whatever it reported stands
    SharedProcess* p = Find(child.pid);
    if (p == nullptr || p->ppid.load() != self_pid_) continue;
    // Only a child still running did not report; its status is written before it is a zombie
    // (kReserved in between hides it from everyone).
    uint32_t running = SharedProcess::kRunning;
    if (!p->state.compare_exchange_strong(running, SharedProcess::kReserved)) continue;
    // Its own children go to init, as its exit would have sent them.
    if (ReparentChildrenOf(child.pid) && self_ != 0) TellInitOfOrphans();
    EndProcess(*p, SIGKILL);
  }
  // Entries of children reaped or freed meanwhile (or no longer this process's) go.
  std::erase_if(children_, [this](const Child& c) {
    const SharedProcess* p = Find(c.pid);
    return p == nullptr || p->ppid.load() != self_pid_;
  });
}

ProcessTable::Waitable ProcessTable::FindEnded(ChildSelector selector, bool reap) {
  Waitable result;
  if (!valid()) return result;
  NoticeDeadChildren();
  const int32_t own_group = slots()[self_].pgid.load();
  for (int i = 0; i < kMaxProcesses; ++i) {
    SharedProcess& p = slots()[i];
    if (i == self_ || !Live(p) || p.ppid.load() != self_pid_) continue;
    if (!Selected(p, selector, own_group)) continue;
    result.any_child = true;
    if (p.state.load() != SharedProcess::kZombie) continue;
    result.pid = p.pid.load();
    result.wait_status = p.wait_status.load();
    if (reap) {
      std::erase_if(children_, [&](const Child& c) { return c.pid == result.pid; });
      p.state.store(SharedProcess::kFree);
    }
    return result;
  }
  return result;
}

std::vector<pollfd> ProcessTable::ChildEventFds() const {
  std::vector<pollfd> fds;
  if (!valid()) return fds;
  fds.push_back(pollfd{event_fd_.get(), POLLIN, 0});
  for (const Child& child : children_) {
    if (child.pidfd.valid()) fds.push_back(pollfd{child.pidfd.get(), POLLIN, 0});
  }
  return fds;
}

int32_t ProcessTable::ParentPid() const { return valid() ? slots()[self_].ppid.load() : 0; }

Result<int32_t> ProcessTable::GroupOf(int32_t pid) const {
  const SharedProcess* p = pid == 0 ? &slots()[self_] : Find(pid);
  if (p == nullptr) return FailErrno(ESRCH, "no such process");
  return p->pgid.load();
}

Result<int32_t> ProcessTable::SessionOf(int32_t pid) const {
  const SharedProcess* p = pid == 0 ? &slots()[self_] : Find(pid);
  if (p == nullptr) return FailErrno(ESRCH, "no such process");
  return p->sid.load();
}

Result<void> ProcessTable::SetGroup(int32_t pid, int32_t pgid) {
  SharedProcess& self = slots()[self_];
  SharedProcess* p = pid == 0 || pid == self_pid_ ? &self : Find(pid);
  // Only this process or a child of it in the same session.
  if (p == nullptr || (p != &self && p->ppid.load() != self_pid_)) {
    return FailErrno(ESRCH, "setpgid: no such child");
  }
  if (p->sid.load() != self.sid.load()) return FailErrno(EPERM, "setpgid: other session");
  const int32_t target = p->pid.load();
  if (p->sid.load() == target) return FailErrno(EPERM, "setpgid: a session leader");
  if (pgid == 0) pgid = target;
  if (pgid != target) {
    // The group must exist in the same session.
    bool exists = false;
    for (int i = 0; i < kMaxProcesses && !exists; ++i) {
      const SharedProcess& q = slots()[i];
      exists = Live(q) && q.pgid.load() == pgid && q.sid.load() == self.sid.load();
    }
    if (!exists) return FailErrno(EPERM, "setpgid: no such group in the session");
  }
  p->pgid.store(pgid);
  return {};
}

Result<int32_t> ProcessTable::NewSession() {
  SharedProcess& self = slots()[self_];
  // A group leader cannot start a session (its group would span two).
  for (int i = 0; i < kMaxProcesses; ++i) {
    const SharedProcess& q = slots()[i];
    if (Live(q) && q.pgid.load() == self_pid_) return FailErrno(EPERM, "setsid: a group leader");
  }
  self.sid.store(self_pid_);
  self.pgid.store(self_pid_);
  return self_pid_;
}

int ProcessTable::Count() const {
  if (!valid()) return 1;
  int count = 0;
  for (int i = 0; i < kMaxProcesses; ++i) count += Live(slots()[i]) ? 1 : 0;
  return count;
}

std::atomic<uint32_t>* ProcessTable::WakeWord() { return valid() ? &slots()[self_].wake : nullptr; }

void ProcessTable::DrainEvents() {
  uint64_t value = 0;
  if (event_fd_.valid()) (void)!read(event_fd_.get(), &value, sizeof value);
}

void ProcessTable::NotifyEvent() {
  const uint64_t one = 1;
  if (event_fd_.valid()) (void)!write(event_fd_.get(), &one, sizeof one);
}

}  // namespace flurry
