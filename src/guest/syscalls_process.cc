// Process syscalls: exit, identity (pids, uids, uname), resources (sysinfo, rlimits, affinity),
// thread-library setup (arch_prctl, set_tid_address, set_robust_list, rseq), getrandom.
// Threads: syscalls_thread.cc.
#include <asm/prctl.h>
#include <sys/prctl.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <ctime>

#include "guest/guest_time.h"
#include "guest/syscall.h"

namespace flurry {
namespace {

SyscallResult SysExit(SyscallContext&, const SyscallArgs& a) {
  return SyscallResult::Exit(static_cast<int>(a.arg[0] & 0xff));
}

SyscallResult SysGetpid(SyscallContext& c, const SyscallArgs&) {
  return SyscallResult::Return(c.state.identity.pid);
}
SyscallResult SysGettid(SyscallContext& c, const SyscallArgs&) {
  return SyscallResult::Return(c.state.identity.tid);
}
SyscallResult SysZero(SyscallContext&, const SyscallArgs&) { return SyscallResult::Return(0); }

SyscallResult SysUname(SyscallContext& c, const SyscallArgs& a) {
  utsname host{};
  ::uname(&host);
  utsname guest{};
  std::snprintf(guest.sysname, sizeof guest.sysname, "Linux");
  std::snprintf(guest.nodename, sizeof guest.nodename, "%s", c.state.identity.hostname.c_str());
  std::snprintf(guest.release, sizeof guest.release, "%s", host.release);
  std::snprintf(guest.version, sizeof guest.version, "#1 flurry process-mode VM");
  std::snprintf(guest.machine, sizeof guest.machine, "x86_64");
  if (auto r = c.memory.WriteObject(a.arg[0], guest); !r) return ErrnoFrom(r.error());
  return SyscallResult::Return(0);
}

SyscallResult SysSysinfo(SyscallContext& c, const SyscallArgs& a) {
  struct sysinfo info {};
  // Both in guest time; a start time ahead of now (an old descriptor from another host) is 0.
  const int64_t now_ns = GuestMonotonicNs(c.state.monotonic_offset_ns);
  const auto start_ns = static_cast<int64_t>(c.state.start_time_ns);
  info.uptime = now_ns > start_ns ? static_cast<long>((now_ns - start_ns) / 1'000'000'000) : 0;
  const MemoryMap& map = c.state.memory_map;
  info.totalram = map.ram_size();
  uint64_t used = map.MappedBytes();
  info.freeram = used < map.ram_size() ? map.ram_size() - used : 0;
  info.procs = 1;
  info.mem_unit = 1;
  if (auto r = c.memory.WriteObject(a.arg[0], info); !r) return ErrnoFrom(r.error());
  return SyscallResult::Return(0);
}

// One vCPU: the affinity mask has CPU 0 only.
SyscallResult SysSchedGetaffinity(SyscallContext& c, const SyscallArgs& a) {
  const uint64_t length = a.arg[1];
  if (length < sizeof(uint64_t) || length % sizeof(uint64_t) != 0) {
    return SyscallResult::Errno(EINVAL);
  }
  const int cpus = std::clamp(c.state.cpus, 1, 64);
  const uint64_t mask = cpus == 64 ? ~0ULL : (1ULL << cpus) - 1;
  if (auto r = c.memory.WriteObject(a.arg[2], mask); !r) return ErrnoFrom(r.error());
  return SyscallResult::Return(sizeof(uint64_t));
}

SyscallResult SysArchPrctl(SyscallContext& c, const SyscallArgs& a) {
  SegmentBases& bases = c.state.segment_bases;
  switch (a.arg[0]) {
    case ARCH_SET_FS:
    case ARCH_SET_GS: {
      const uint64_t base = a.arg[1];
      if (base >= (1ULL << 47)) return SyscallResult::Errno(EPERM);  // non-canonical
      (a.arg[0] == ARCH_SET_FS ? bases.fs_base : bases.gs_base) = base;
      bases.dirty = true;
      return SyscallResult::Return(0);
    }
    case ARCH_GET_FS:
    case ARCH_GET_GS: {
      uint64_t base = a.arg[0] == ARCH_GET_FS ? bases.fs_base : bases.gs_base;
      if (auto r = c.memory.WriteObject(a.arg[1], base); !r) return ErrnoFrom(r.error());
      return SyscallResult::Return(0);
    }
    default:
      return SyscallResult::Errno(EINVAL);
  }
}

SyscallResult SysSetTidAddress(SyscallContext& c, const SyscallArgs& a) {
  c.state.identity.clear_child_tid = a.arg[0];
  return SyscallResult::Return(c.state.identity.tid);
}

SyscallResult SysSetRobustList(SyscallContext& c, const SyscallArgs& a) {
  if (a.arg[1] != 24) return SyscallResult::Errno(EINVAL);  // sizeof(struct robust_list_head)
  c.state.identity.robust_list = a.arg[0];
  c.state.identity.robust_list_len = a.arg[1];
  return SyscallResult::Return(0);
}

// glibc registers rseq if the kernel offers it; without it glibc simply does not use it.
SyscallResult SysNotOffered(SyscallContext&, const SyscallArgs&) {
  return SyscallResult::Errno(ENOSYS);
}

struct GuestRlimit {
  uint64_t cur;
  uint64_t max;
};

GuestRlimit LimitFor(const GuestState& state, int resource) {
  constexpr uint64_t kInfinity = ~0ULL;
  switch (resource) {
    case RLIMIT_STACK: {
      uint64_t stack = state.memory_map.ram_size() - state.memory_map.stack_bottom();
      return {stack, stack};
    }
    case RLIMIT_NOFILE:
      return {FdTable::kMaxFds, FdTable::kMaxFds};
    case RLIMIT_NPROC:
      return {1, 1};
    case RLIMIT_AS:
    case RLIMIT_DATA:
      return {state.memory_map.ram_size(), state.memory_map.ram_size()};
    case RLIMIT_CORE:
      return {0, 0};
    default:
      return {kInfinity, kInfinity};
  }
}

SyscallResult SysPrlimit64(SyscallContext& c, const SyscallArgs& a) {
  const int32_t pid = static_cast<int32_t>(a.arg[0]);
  const int resource = static_cast<int>(a.arg[1]);
  if (pid != 0 && pid != c.state.identity.pid) return SyscallResult::Errno(ESRCH);
  if (resource < 0 || resource >= RLIM_NLIMITS) return SyscallResult::Errno(EINVAL);
  if (a.arg[3] != 0) {
    if (auto r = c.memory.WriteObject(a.arg[3], LimitFor(c.state, resource)); !r) {
      return ErrnoFrom(r.error());
    }
  }
  if (a.arg[2] != 0) {  // new limits are accepted and not enforced
    auto limit = c.memory.ReadObject<GuestRlimit>(a.arg[2]);
    if (!limit) return ErrnoFrom(limit.error());
    if (limit->cur > limit->max) return SyscallResult::Errno(EINVAL);
  }
  return SyscallResult::Return(0);
}

SyscallResult SysGetrlimit(SyscallContext& c, const SyscallArgs& a) {
  return SysPrlimit64(c, SyscallArgs{a.nr, {0, a.arg[0], 0, a.arg[1], 0, 0}});
}

SyscallResult SysSetrlimit(SyscallContext& c, const SyscallArgs& a) {
  return SysPrlimit64(c, SyscallArgs{a.nr, {0, a.arg[0], a.arg[1], 0, 0, 0}});
}

SyscallResult SysGetrusage(SyscallContext& c, const SyscallArgs& a) {
  const int who = static_cast<int>(a.arg[0]);
  if (who != RUSAGE_SELF && who != RUSAGE_CHILDREN && who != RUSAGE_THREAD) {
    return SyscallResult::Errno(EINVAL);
  }
  struct rusage usage {};
  if (who != RUSAGE_CHILDREN) getrusage(RUSAGE_THREAD, &usage);
  if (auto r = c.memory.WriteObject(a.arg[1], usage); !r) return ErrnoFrom(r.error());
  return SyscallResult::Return(0);
}

// Fresh host entropy for every call: each VM (and, later, each clone) draws its own.
SyscallResult SysGetrandom(SyscallContext& c, const SyscallArgs& a) {
  const uint64_t flags = a.arg[2];
  if (flags & ~static_cast<uint64_t>(GRND_NONBLOCK | GRND_RANDOM | GRND_INSECURE)) {
    return SyscallResult::Errno(EINVAL);
  }
  constexpr uint64_t kMaxChunk = 32 << 20;
  const uint64_t length = a.arg[1] < kMaxChunk ? a.arg[1] : kMaxChunk;
  auto window = c.memory.Window(a.arg[0], length, GuestAccess::kWrite);
  if (!window) return ErrnoFrom(window.error());
  std::span<uint8_t> bytes = window->bytes();
  uint64_t done = 0;
  while (done < length) {
    ssize_t n = getrandom(bytes.data() + done, length - done, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return SyscallResult::Errno(errno);
    }
    done += static_cast<uint64_t>(n);
  }
  if (auto stored = window->Store(done); !stored) return ErrnoFrom(stored.error());
  return SyscallResult::Return(static_cast<int64_t>(done));
}

// prctl: the thread's name (PR_SET_NAME, PR_GET_NAME), and the settings programs query or set
// for themselves with no effect a VM needs (the parent-death signal, dumpability, no_new_privs:
// a guest cannot gain privileges anyway). Anything else is EINVAL, as Linux answers an option it
// does not know.
SyscallResult SysPrctl(SyscallContext& c, const SyscallArgs& a) {
  constexpr size_t kNameMax = 15;  // TASK_COMM_LEN - 1
  ProcessIdentity& identity = c.state.identity;
  switch (static_cast<int>(a.arg[0])) {
    case PR_SET_NAME: {
      auto name = c.memory.ReadCString(a.arg[1], 4096);
      if (!name) return ErrnoFrom(name.error());
      identity.comm = name->substr(0, kNameMax);
      return SyscallResult::Return(0);
    }
    case PR_GET_NAME: {
      std::string name = identity.comm;
      if (name.empty()) name = identity.exe_path.substr(identity.exe_path.find_last_of('/') + 1);
      char buffer[kNameMax + 1] = {};
      std::memcpy(buffer, name.data(), std::min(name.size(), kNameMax));
      if (auto w = c.memory.Write(a.arg[1], buffer, sizeof buffer); !w) return ErrnoFrom(w.error());
      return SyscallResult::Return(0);
    }
    case PR_SET_PDEATHSIG:
      if (a.arg[1] > 64) return SyscallResult::Errno(EINVAL);
      return SyscallResult::Return(0);
    case PR_GET_PDEATHSIG:
      if (auto w = c.memory.WriteObject(a.arg[1], int32_t{0}); !w) return ErrnoFrom(w.error());
      return SyscallResult::Return(0);
    case PR_GET_DUMPABLE:
      return SyscallResult::Return(1);
    case PR_SET_DUMPABLE:
      return a.arg[1] <= 1 ? SyscallResult::Return(0) : SyscallResult::Errno(EINVAL);
    case PR_SET_NO_NEW_PRIVS:
      return a.arg[1] == 1 ? SyscallResult::Return(0) : SyscallResult::Errno(EINVAL);
    case PR_GET_NO_NEW_PRIVS:
      return SyscallResult::Return(1);
    default:
      return SyscallResult::Errno(EINVAL);
  }
}

SyscallResult SysUmask(SyscallContext&, const SyscallArgs&) { return SyscallResult::Return(022); }

}  // namespace

void RegisterProcessSyscalls(SyscallTable& table) {
  table.Register(SYS_exit_group, SysExit);
  table.Register(SYS_getpid, SysGetpid);
  table.Register(SYS_gettid, SysGettid);
  for (uint64_t nr : {SYS_getuid, SYS_geteuid, SYS_getgid, SYS_getegid}) {
    table.Register(nr, SysZero);
  }
  table.Register(SYS_uname, SysUname);
  table.Register(SYS_sysinfo, SysSysinfo);
  table.Register(SYS_sched_getaffinity, SysSchedGetaffinity);
  table.Register(SYS_arch_prctl, SysArchPrctl);
  table.Register(SYS_prctl, SysPrctl);
  table.Register(SYS_set_tid_address, SysSetTidAddress);
  table.Register(SYS_set_robust_list, SysSetRobustList);
  table.Register(SYS_rseq, SysNotOffered);
  table.Register(SYS_prlimit64, SysPrlimit64);
  table.Register(SYS_getrlimit, SysGetrlimit);
  table.Register(SYS_setrlimit, SysSetrlimit);
  table.Register(SYS_getrusage, SysGetrusage);
  table.Register(SYS_getrandom, SysGetrandom);
  table.Register(SYS_umask, SysUmask);
}

}  // namespace flurry
