#include "backend/seccomp/stub_process.h"

#include <fcntl.h>
#include <linux/futex.h>
#include <poll.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <iterator>
#include <mutex>
#include <string>
#include <string_view>

#include "arch/x86_64/layout.h"
#include "backend/seccomp/vmm_alive.h"
#include "base/clock.h"

namespace flurry {

extern const uint8_t kStubImage[];
extern const size_t kStubImage_size;

namespace {

static_assert(FLURRY_STUB_SHARED_ADDR > x86::kMaxRamSize);

// How long the VMM spins for the stub before sleeping (TSC ticks; ~10-30 us).
constexpr uint64_t kSpinTicks = 40000;
// How long a stub may take to start or to announce itself after a fork.
constexpr int kStartTimeoutMs = 10000;

// The stub's executable, in a sealed memfd made once per process.
Result<int> StubImageFd() {
  static std::once_flag once;
  static int fd = -1;
  static int error = 0;
  std::call_once(once, [] {
    int memfd = memfd_create("flurry-stub", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (memfd < 0) {
      error = errno;
      return;
    }
    size_t done = 0;
    while (done < kStubImage_size) {
      ssize_t n = write(memfd, kStubImage + done, kStubImage_size - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        error = n < 0 ? errno : EIO;
        close(memfd);
        return;
      }
      done += static_cast<size_t>(n);
    }
    fcntl(memfd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_WRITE | F_SEAL_SEAL);
    fd = memfd;
  });
  if (fd < 0) return FailErrno(error, "creating the stub's executable");
  return fd;
}

// Why a stub that ended during start-up did (its exit codes: stub.c's die() calls).
std::string StartFailure(int code) {
  switch (code) {
    case 5:
      return "it could not map guest memory at the guest's addresses (vm.mmap_min_addr must "
             "allow 0xa000, or run as root)";
    case 4:
      return "it could not install its seccomp filter";
    case 6:
    case 7:
      return "it could not map the page shared with the VMM";
    case 13:
      return "it could not create a userfaultfd for memory on demand";
    default:
      return fmt::format("it exited with status {}", code);
  }
}

long Futex(volatile uint32_t* word, int op, uint32_t value, const timespec* timeout) {
  return syscall(SYS_futex, const_cast<uint32_t*>(word), op, value, timeout, nullptr, 0);
}

}  // namespace

bool StubProcess::Alive() const {
  pollfd p{pidfd_.get(), POLLIN, 0};
  int ready = 0;
  do {  // a poll that does not wait still fails with EINTR when a signal is pending (a kick)
    ready = poll(&p, 1, 0);
  } while (ready < 0 && errno == EINTR);
  return ready == 0;
}

StubProcess::StubProcess(StubProcess&& other) noexcept { *this = std::move(other); }

StubProcess& StubProcess::operator=(StubProcess&& other) noexcept {
  if (this != &other) {
    Reset();
    pid_ = std::exchange(other.pid_, -1);
    pidfd_ = std::move(other.pidfd_);
    page_fd_ = std::move(other.page_fd_);
    page_ = std::move(other.page_);
    lanes_ = std::exchange(other.lanes_, 1);
    lane_tids_ = std::exchange(other.lane_tids_, {});
    resumed_ = std::exchange(other.resumed_, 0);
    last_any_ = std::exchange(other.last_any_, -1);
    fork_token_ = other.fork_token_;
    adopted_ = std::exchange(other.adopted_, false);
    kicked_at_ns_.store(other.kicked_at_ns_.exchange(0));
    namespaces_ = other.namespaces_;
  }
  return *this;
}

StubProcess::~StubProcess() { Reset(); }

void StubProcess::Reset() {
  if (pidfd_.valid()) {
    syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
    // Dead before Release() touches the page: the guest must not race its repair.
    pollfd p{pidfd_.get(), POLLIN, 0};
    poll(&p, 1, 1000);
  }
  Release();
}

void StubProcess::Release() {
  if (adopted_ && page_.data() != nullptr) ForgetVmmAliveWord(&shared().vmm_alive);
  adopted_ = false;
  page_.Reset();
  page_fd_.Reset();
  pidfd_.Reset();
  pid_ = -1;
  lanes_ = 1;
  lane_tids_ = {};
  resumed_ = 0;
  last_any_ = -1;
}

Result<StubProcess> StubProcess::Launch(const GuestLayout& layout) {
  const int image = FLURRY_TRY(StubImageFd());
  StubProcess stub;
  stub.page_fd_.Reset(memfd_create("flurry-stub-shared", MFD_CLOEXEC));
  if (!stub.page_fd_.valid()) return FailErrno("creating the stub's shared pages");
  if (ftruncate(stub.page_fd_.get(), FLURRY_STUB_SHARED_SIZE) != 0) {
    return FailErrno("sizing the stub's shared pages");
  }
  stub.page_ = FLURRY_TRY(
      Mapping::Shared(stub.page_fd_.get(), FLURRY_STUB_SHARED_SIZE, PROT_READ | PROT_WRITE));
  if (getrandom(&stub.fork_token_, sizeof stub.fork_token_, 0) != sizeof stub.fork_token_) {
    return FailErrno("getrandom for the stub's fork token");
  }
  volatile flurry_stub_shared& s = stub.shared();
  s.magic = FLURRY_STUB_MAGIC;
  s.version = FLURRY_STUB_VERSION;
  s.ram_size = layout.ram_size;
  s.user_base = x86::kUserBase;
  s.huge_start = layout.huge_start;
  s.huge_end = layout.huge_end;
  s.vvar_addr = x86::kVvarAddr;
  s.vdso_addr = x86::kVdsoAddr;
  s.vdso_size = x86::kVdsoMaxSize;
  s.guard_start = layout.guard_start;
  s.guard_end = layout.guard_start != 0 ? layout.guard_start + x86::kHugePageSize : 0;
  s.setup_flags = layout.on_demand ? FLURRY_STUB_SETUP_USERFAULTFD : 0;
  s.fork_token = stub.fork_token_;

  // The stub gets empty network, IPC, UTS and mount namespaces where the host allows them
  // (root, or unprivileged user namespaces); its filter confines it either way.
  const pid_t parent = getpid();
  const unsigned long kNamespaces = CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNS;
  struct Attempt {
    unsigned long flags;
    const char* names;
  };
  const Attempt attempts[] = {{kNamespaces, "net,ipc,uts,mount"},
                              {kNamespaces | CLONE_NEWUSER, "user,net,ipc,uts,mount"},
                              {0, "none"}};
  pid_t pid = -1;
  for (const Attempt& attempt : attempts) {
    pid = static_cast<pid_t>(
        syscall(SYS_clone, attempt.flags | SIGCHLD, nullptr, nullptr, nullptr, nullptr));
    if (pid >= 0) {
      stub.namespaces_ = attempt.names;
      break;
    }
    if (errno != EPERM && errno != EINVAL && errno != ENOSPC && errno != EUSERS) break;
  }
  if (pid < 0) return FailErrno("starting the stub process");
  if (pid == 0) {
    // The child: only raw system calls from here to execveat.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(126);
    setsid();
    const int page = fcntl(stub.page_fd_.get(), F_DUPFD, 16);
    const int exe = fcntl(image, F_DUPFD, 16);
    if (page < 0 || exe < 0 || dup2(page, FLURRY_STUB_SHARED_FD) < 0 || dup2(exe, 4) < 0) {
      _exit(125);
    }
    syscall(SYS_close_range, 5, ~0U, 0);
    prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
    char name[] = "flurry-stub";
    char* const argv[] = {name, nullptr};
    char* const envp[] = {nullptr};
    syscall(SYS_execveat, 4, "", argv, envp, AT_EMPTY_PATH);
    _exit(127);
  }
  stub.pid_ = pid;
  stub.pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!stub.pidfd_.valid()) {
    kill(pid, SIGKILL);
    return FailErrno("pidfd_open for the stub");
  }
  FLURRY_TRY_CTX(stub.WaitForAnnouncement(0, FLURRY_STUB_EVENT_READY), "starting the stub process");
  return stub;
}

Result<void> StubProcess::WaitForAnnouncement(int lane, uint32_t event) {
  volatile flurry_stub_shared& s = shared(lane);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kStartTimeoutMs);
  while (__atomic_load_n(&s.turn, __ATOMIC_ACQUIRE) != FLURRY_STUB_TURN_VMM) {
    if (!Alive()) {
      siginfo_t info{};
      if (waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED | WNOHANG) == 0 &&
          info.si_code == CLD_EXITED) {
        return Fail("the stub ended: {}", StartFailure(info.si_status));
      }
      return Fail("the stub ended: {}", DescribeDeath());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Fail("the stub did not start within {} ms", kStartTimeoutMs);
    }
    timespec pause{0, 50'000};
    Futex(&s.turn, FUTEX_WAIT, FLURRY_STUB_TURN_GUEST, &pause);
  }
  if (s.event != event || shared(0).magic != FLURRY_STUB_MAGIC) {
    return Fail("the stub announced event {} instead of {}", s.event, event);
  }
  return {};
}

std::string StubProcess::DescribeDeath() const {
  // The pidfd reports the end a moment before the zombie can be waited for: look for up to
  // 100 ms.
  for (int attempt = 0; attempt < 100 && pidfd_.valid(); ++attempt) {
    siginfo_t info{};
    if (waitid(P_PIDFD, static_cast<id_t>(pidfd_.get()), &info, WEXITED | WNOHANG | WNOWAIT) != 0) {
      if (errno == EINTR) continue;  // the run thread's kick (SIGUSR1)
      break;
    }
    if (info.si_pid != 0) {
      if (info.si_code == CLD_EXITED) {
        return fmt::format("it exited with status {}", info.si_status);
      }
      const char* name = sigabbrev_np(info.si_status);
      return fmt::format("it was killed by SIG{}", name != nullptr ? name : "?");
    }
    usleep(1000);
  }
  return "it is gone";
}

void StubProcess::Post(int lane, uint32_t command) {
  volatile flurry_stub_shared& s = shared(lane);
  // A kick that arrived while the stub was stopped is answered once it runs: time it from now.
  if (kicked_at_ns_.load() != 0) kicked_at_ns_.store(MonotonicNs());
  // From a lane's first RESUME on, the guest may run on it: no more fork token (AddLane).
  if (command == FLURRY_STUB_CMD_RESUME) resumed_ |= LaneBit(lane);
  s.command = command;
  __atomic_store_n(&s.turn, FLURRY_STUB_TURN_STUB, __ATOMIC_SEQ_CST);
  if (__atomic_load_n(&s.stub_waiting, __ATOMIC_SEQ_CST)) Futex(&s.turn, FUTEX_WAKE, 1, nullptr);
}

Result<void> StubProcess::CheckWhileWaiting() {
  if (!Alive()) {
    return Fail("the guest's stub process died: {}", DescribeDeath());
  }
  const int64_t kicked = kicked_at_ns_.load();
  if (kicked != 0 && MonotonicNs() - kicked > std::chrono::nanoseconds(kKickAnswerLimit).count()) {
    syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
    return Fail(
        "the guest's stub did not answer for {} s (the guest tampered with the page "
        "it shares with the VMM); stopped it",
        kKickAnswerLimit.count());
  }
  return {};
}

Result<uint32_t> StubProcess::Wait(int lane) {
  if (!LaneExists(lane)) return Fail("the stub has no lane {}", lane);
  volatile flurry_stub_shared& s = shared(lane);
  const uint64_t start = __rdtsc();
  while (__rdtsc() - start < kSpinTicks) {
    if (__atomic_load_n(&s.turn, __ATOMIC_ACQUIRE) == FLURRY_STUB_TURN_VMM) {
      kicked_at_ns_.store(0);
      return s.event;
    }
    _mm_pause();
  }
  for (;;) {
    __atomic_store_n(&s.vmm_waiting, 1, __ATOMIC_SEQ_CST);
    const uint32_t turn = __atomic_load_n(&s.turn, __ATOMIC_SEQ_CST);
    if (turn == FLURRY_STUB_TURN_VMM) break;
    timespec timeout{0, 50'000'000};
    Futex(&s.turn, FUTEX_WAIT, turn, &timeout);
    if (__atomic_load_n(&s.turn, __ATOMIC_SEQ_CST) == FLURRY_STUB_TURN_VMM) break;
    if (Result<void> ok = CheckWhileWaiting(); !ok) {
      __atomic_store_n(&s.vmm_waiting, 0, __ATOMIC_SEQ_CST);
      return std::unexpected(ok.error());
    }
  }
  __atomic_store_n(&s.vmm_waiting, 0, __ATOMIC_SEQ_CST);
  kicked_at_ns_.store(0);
  return s.event;
}

Result<std::pair<int, uint32_t>> StubProcess::WaitAny(LaneSet wanted) {
  wanted &= lanes_;
  if (wanted == 0) return Fail("waiting for no lane of the stub");
  // The first wanted lane whose turn is the VMM's, after the one returned last.
  auto scan = [&](int memory_order) -> int {
    for (int i = 1; i <= FLURRY_STUB_MAX_LANES; ++i) {
      const int lane = (last_any_ + i + FLURRY_STUB_MAX_LANES) % FLURRY_STUB_MAX_LANES;
      if ((wanted & LaneBit(lane)) == 0) continue;
      if (__atomic_load_n(&shared(lane).turn, memory_order) == FLURRY_STUB_TURN_VMM) return lane;
    }
    return -1;
  };
  int found = -1;
  const uint64_t start = __rdtsc();
  while (__rdtsc() - start < kSpinTicks) {
    found = scan(__ATOMIC_ACQUIRE);
    if (found >= 0) break;
    _mm_pause();
  }
  if (found < 0) {
    // Sleep on the doorbell, which every hand-off rings after storing its turn: the flag and
    // the doorbell are read before the scan, so a hand-off the scan misses changes the doorbell
    // (FUTEX_WAIT returns at once) or sees the flag and wakes us.
    volatile flurry_stub_shared& page0 = shared(0);
    for (;;) {
      __atomic_store_n(&page0.vmm_waiting_any, 1, __ATOMIC_SEQ_CST);
      const uint32_t bell = __atomic_load_n(&page0.doorbell, __ATOMIC_SEQ_CST);
      found = scan(__ATOMIC_SEQ_CST);
      if (found >= 0) break;
      timespec timeout{0, 50'000'000};
      Futex(&page0.doorbell, FUTEX_WAIT, bell, &timeout);
      found = scan(__ATOMIC_SEQ_CST);
      if (found >= 0) break;
      if (Result<void> ok = CheckWhileWaiting(); !ok) {
        __atomic_store_n(&page0.vmm_waiting_any, 0, __ATOMIC_SEQ_CST);
        return std::unexpected(ok.error());
      }
    }
    __atomic_store_n(&page0.vmm_waiting_any, 0, __ATOMIC_SEQ_CST);
  }
  last_any_ = found;
  kicked_at_ns_.store(0);
  return std::pair<int, uint32_t>{found, shared(found).event};
}

Result<int64_t> StubProcess::Command(int lane, uint32_t command) {
  if (!LaneExists(lane)) return Fail("the stub has no lane {}", lane);
  Post(lane, command);
  const uint32_t event = FLURRY_TRY(Wait(lane));
  if (event != FLURRY_STUB_EVENT_DONE) {
    return Fail("the stub answered command {} with event {}", command, event);
  }
  return static_cast<int64_t>(shared(lane).result);
}

Result<StubProcess> StubProcess::Fork(int lane, bool die_with_parent) {
  if (!LaneExists(lane)) return Fail("the stub has no lane {}", lane);
  // The token goes through the lane's page: no other thread may run guest code meanwhile.
  if (lanes_ != LaneBit(lane)) {
    return Fail("forking the stub: it has lanes besides lane {} (end the other lanes first)", lane);
  }
  FLURRY_TRY(CheckThreads(1, "forking the stub"));
  volatile flurry_stub_shared& s = shared(lane);
  s.args[0] = fork_token_;
  s.args[1] = die_with_parent ? 1 : 0;
  Result<int64_t> forked = Command(lane, FLURRY_STUB_CMD_FORK);
  s.args[0] = 0;
  const int64_t pid = FLURRY_TRY_CTX(std::move(forked), "forking the stub");
  if (pid <= 0 || pid > INT32_MAX) {
    return FailErrno(pid < 0 && pid > -4096 ? static_cast<int>(-pid) : EPROTO, "forking the stub");
  }

  StubProcess child;
  child.pid_ = static_cast<pid_t>(pid);
  child.fork_token_ = fork_token_;
  child.namespaces_ = namespaces_;
  child.lanes_ = LaneBit(lane);  // fork() copied only the forking thread
  child.resumed_ = resumed_ & LaneBit(lane);
  child.pidfd_.Reset(static_cast<int>(syscall(SYS_pidfd_open, child.pid_, 0)));
  if (!child.pidfd_.valid()) return FailErrno("pidfd_open for a forked stub");
  // The child makes its own shared area (memfd at its fd 0); until then its fd 0 may still be
  // the one it inherited from us.
  struct stat own {};
  fstat(page_fd_.get(), &own);
  const auto deadline =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(kStartTimeoutMs);
  for (;;) {
    int fd = static_cast<int>(syscall(SYS_pidfd_getfd, child.pidfd_.get(), 0, 0));
    if (fd >= 0) {
      struct stat st {};
      if (fstat(fd, &st) == 0 && st.st_ino != own.st_ino &&
          st.st_size == static_cast<off_t>(FLURRY_STUB_SHARED_SIZE)) {
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        child.page_fd_.Reset(fd);
        break;
      }
      close(fd);
    } else if (errno != EBADF) {
      return FailErrno("taking a forked stub's shared pages");
    }
    if (!child.Alive()) {
      return Fail("a forked stub ended at once: {}", child.DescribeDeath());
    }
    if (std::chrono::steady_clock::now() > deadline) {
      return Fail("a forked stub did not announce itself within {} ms", kStartTimeoutMs);
    }
    sched_yield();
  }
  child.page_ = FLURRY_TRY(
      Mapping::Shared(child.page_fd_.get(), FLURRY_STUB_SHARED_SIZE, PROT_READ | PROT_WRITE));
  FLURRY_TRY_CTX(child.WaitForAnnouncement(lane, FLURRY_STUB_EVENT_FORKED), "forking the stub");
  return child;
}

Result<void> StubProcess::Adopt() {
  FLURRY_TRY(PointVmmAliveWord(&shared().vmm_alive));
  adopted_ = true;
  return {};
}

Result<UniqueFd> StubProcess::OpenProc(const char* what) const {
  const std::string path = fmt::format("/proc/{}/{}", pid_, what);
  UniqueFd fd(open(path.c_str(), O_RDWR | O_CLOEXEC));
  if (!fd.valid() && errno == EACCES) fd.Reset(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return FailErrno(path);
  // The pid could have been reused if the stub died: make sure it is still ours.
  if (!Alive()) return Fail("the stub died: {}", DescribeDeath());
  return fd;
}

void StubProcess::Kick() {
  int64_t expected = 0;
  kicked_at_ns_.compare_exchange_strong(expected, MonotonicNs());
  if (pidfd_.valid()) {
    syscall(SYS_pidfd_send_signal, pidfd_.get(), FLURRY_STUB_KICK_SIGNAL, nullptr, 0);
  }
}

void StubProcess::KickLane(int lane) {
  const pid_t tid = lane == 0 ? pid_ : lane_tids_[static_cast<size_t>(lane)];
  if (!LaneExists(lane) || tid <= 0 || !pidfd_.valid()) return;
  int64_t expected = 0;
  kicked_at_ns_.compare_exchange_strong(expected, MonotonicNs());
  // (A stub that died is not reaped until this VMM waits for it, or, forked, may be reaped at
  // once: checked first, so that the pid is ours.)
  if (Alive()) syscall(SYS_tgkill, pid_, tid, FLURRY_STUB_KICK_SIGNAL);
}

Result<UniqueFd> StubProcess::TakeUserfault(int lane) {
  const int64_t number = shared().uffd_fd;
  if (number < 0 || number > INT32_MAX) {
    return Fail("the stub was started without a userfaultfd (memory on demand)");
  }
  shared().uffd_fd = -1;
  UniqueFd fd(
      static_cast<int>(syscall(SYS_pidfd_getfd, pidfd_.get(), static_cast<int>(number), 0)));
  if (!fd.valid()) return FailErrno("taking the stub's userfaultfd");
  fcntl(fd.get(), F_SETFD, FD_CLOEXEC);
  // The stub's own copy goes: a guest must not hold the fd that serves its memory.
  const int64_t closed = FLURRY_TRY(Command(lane, FLURRY_STUB_CMD_CLOSE_FDS));
  if (closed != 0) return FailErrno(static_cast<int>(-closed), "closing the stub's userfaultfd");
  return fd;
}

}  // namespace flurry
