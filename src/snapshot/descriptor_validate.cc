// Semantic validation of a decoded (or about to be written) VmDescriptor.
#include <fcntl.h>
#include <time.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <set>
#include <vector>

#include "guest/dev_files.h"
#include "guest/posix_timers.h"
#include "snapshot/descriptor_checks.h"
#include "snapshot/descriptor_codec.h"

namespace flurry {

using namespace descriptor_internal;

namespace {

// Times in a descriptor stay below 2^62 ns (146 years): the VMM adds and subtracts clock
// offsets of the same bound without overflowing.
constexpr int64_t kTimeLimitNs = int64_t{1} << 62;

// XSAVE image layout (standard format).
constexpr size_t kXsaveMxcsrOffset = 24;
constexpr size_t kXsaveSwReservedOffset = 464;  // ..511: software-reserved
constexpr size_t kXsaveHeaderOffset = 512;      // XSTATE_BV, XCOMP_BV, 48 reserved bytes
constexpr size_t kXsaveHeaderEnd = 576;
static_assert(kXsaveHeaderEnd == x86::UserCpuState::kMinXsaveBytes);
constexpr uint64_t kXcr0X87Sse = 0x3;

// ---------------------------------------------------------------------------------------------
// Semantic validation

// A bounded string without NUL bytes; `absolute` additionally requires a leading '/'.
Result<void> CheckString(std::string_view what, const std::string& value, size_t max_bytes,
                         bool absolute) {
  if (value.size() > max_bytes) {
    return Invalid("{} is {} bytes, at most {} allowed", what, value.size(), max_bytes);
  }
  if (value.find('\0') != std::string::npos) return Invalid("{} contains a NUL byte", what);
  if (absolute && (value.empty() || value[0] != '/')) {
    return Invalid("{} \"{}\" is not an absolute path", what, value);
  }
  return {};
}

// Bits 63..47 all equal: an address the CPU accepts as a segment base (4-level paging).
bool IsCanonical(uint64_t address) {
  return static_cast<uint64_t>(static_cast<int64_t>(address << 16) >> 16) == address;
}

uint64_t LoadXsave64(const std::vector<uint8_t>& xsave, size_t offset) {
  uint64_t value;
  std::memcpy(&value, xsave.data() + offset, sizeof(value));
  return value;
}

bool AllZero(const std::vector<uint8_t>& bytes, size_t begin, size_t end) {
  return std::all_of(bytes.begin() + begin, bytes.begin() + end, [](uint8_t b) { return b == 0; });
}

// The standard-format XSAVE image of x86::UserCpuState (Intel SDM vol. 1, 13.4): what XRSTOR
// and the kernel (KVM_SET_XSAVE, sigreturn) would refuse is refused here, independently of the
// host CPU. Which components exist at which offsets is the CPU's business: the CPU signature
// check (CheckCompatibleWithHost) pins the model and XCR0.
Result<void> ValidateXsave(const x86::UserCpuState& v) {
  FLURRY_TRY(CheckXsaveSize(v.xsave.size()));
  if (v.xsave.empty()) return {};
  const std::vector<uint8_t>& x = v.xsave;
  uint32_t mxcsr;
  std::memcpy(&mxcsr, x.data() + kXsaveMxcsrOffset, sizeof(mxcsr));
  if (mxcsr >> 16 != 0) return Invalid("xsave MXCSR {:#x} sets reserved bits 31..16", mxcsr);
  if (!AllZero(x, kXsaveSwReservedOffset, kXsaveHeaderOffset)) {
    return Invalid("xsave bytes {}..{} (software-reserved) are not zero", kXsaveSwReservedOffset,
                   kXsaveHeaderOffset - 1);
  }
  const uint64_t xstate_bv = LoadXsave64(x, kXsaveHeaderOffset);
  if ((xstate_bv & ~v.xcr0) != 0) {
    return Invalid("xsave XSTATE_BV {:#x} has components outside xcr0 {:#x}", xstate_bv, v.xcr0);
  }
  const uint64_t xcomp_bv = LoadXsave64(x, kXsaveHeaderOffset + 8);
  if (xcomp_bv != 0) {
    return Invalid("xsave XCOMP_BV is {:#x}, not 0: only the standard format is accepted",
                   xcomp_bv);
  }
  if (!AllZero(x, kXsaveHeaderOffset + 16, kXsaveHeaderEnd)) {
    return Invalid("xsave header bytes {}..{} (reserved) are not zero", kXsaveHeaderOffset + 16,
                   kXsaveHeaderEnd - 1);
  }
  return {};
}

Result<void> ValidateUserCpu(const x86::UserCpuState& v, uint64_t ram_size) {
  const x86::UserRegs& r = v.regs;
  // Where user code can stand: user memory, or flurry's vDSO (a guest stopped from outside may
  // be inside clock_gettime).
  const bool in_user_memory = r.rip >= x86::kUserBase && r.rip < ram_size;
  const bool in_vdso = r.rip >= x86::kVdsoAddr && r.rip < x86::kVdsoAddr + x86::kVdsoMaxSize;
  if (!in_user_memory && !in_vdso) {
    return Invalid(
        "rip {:#x} is neither in user memory [{:#x}, {:#x}) nor in the vDSO [{:#x}, {:#x})", r.rip,
        x86::kUserBase, ram_size, x86::kVdsoAddr, x86::kVdsoAddr + x86::kVdsoMaxSize);
  }
  // rsp == ram_size: an empty stack at the top of RAM.
  if (r.rsp < x86::kUserBase || r.rsp > ram_size) {
    return Invalid("rsp {:#x} is outside user memory [{:#x}, {:#x}]", r.rsp, x86::kUserBase,
                   ram_size);
  }
  if (!IsCanonical(r.fs_base)) return Invalid("fs base {:#x} is not canonical", r.fs_base);
  if (!IsCanonical(r.gs_base)) return Invalid("gs base {:#x} is not canonical", r.gs_base);
  if (v.xcr0 != 0 && (v.xcr0 & kXcr0X87Sse) != kXcr0X87Sse) {
    return Invalid("xcr0 {:#x} lacks x87 or SSE (bits 0 and 1)", v.xcr0);
  }
  return ValidateXsave(v);
}

Result<void> ValidateIdentity(const ProcessIdentity& id) {
  if (id.pid < 1) return Invalid("pid {} is not positive", id.pid);
  if (id.tid < 1) return Invalid("tid {} is not positive", id.tid);
  if (id.ppid < 0) return Invalid("ppid {} is negative", id.ppid);
  FLURRY_TRY(CheckString("exe path", id.exe_path, kMaxDescriptorPathBytes, true));
  FLURRY_TRY(CheckString("hostname", id.hostname, kMaxHostnameBytes, false));
  return {};
}

Result<void> ValidateMemory(const MemoryLayoutRecord& m) {
  FLURRY_TRY(CheckRamSize(m.ram_size));
  const std::pair<const char*, uint64_t> aligned[] = {{"image end", m.image_end},
                                                      {"brk start", m.brk_start},
                                                      {"mmap top", m.mmap_top},
                                                      {"stack bottom", m.stack_bottom}};
  for (const auto& [name, value] : aligned) {
    if (value % kPageSize != 0) return Invalid("{} {:#x} is not page-aligned", name, value);
  }
  // kUserBase <= image_start <= image_end <= brk_start <= brk <= mmap_top <= stack_bottom <
  // ram_size
  const std::pair<const char*, uint64_t> order[] = {{"user base", x86::kUserBase},
                                                    {"image start", m.image_start},
                                                    {"image end", m.image_end},
                                                    {"brk start", m.brk_start},
                                                    {"brk", m.brk},
                                                    {"mmap top", m.mmap_top},
                                                    {"stack bottom", m.stack_bottom}};
  for (size_t i = 1; i < std::size(order); ++i) {
    if (order[i].second < order[i - 1].second) {
      return Invalid("memory layout out of order: {} {:#x} is below {} {:#x}", order[i].first,
                     order[i].second, order[i - 1].first, order[i - 1].second);
    }
  }
  if (m.stack_bottom >= m.ram_size) {
    return Invalid("stack bottom {:#x} is not below the end of RAM {:#x}", m.stack_bottom,
                   m.ram_size);
  }
  // mmap regions: page-aligned, inside [AlignUp(brk), mmap_top), non-overlapping.
  const uint64_t floor = x86::AlignUp(m.brk, kPageSize);  // brk <= mmap_top: no overflow
  uint64_t previous_end = floor;
  for (const auto& [start, length] : m.regions) {
    if (start % kPageSize != 0 || length == 0 || length % kPageSize != 0) {
      return Invalid("memory region [{:#x}, +{:#x}) is not a non-empty page-aligned range", start,
                     length);
    }
    if (start < floor || start > m.mmap_top || length > m.mmap_top - start) {
      return Invalid("memory region [{:#x}, {:#x}) is outside the mmap area [{:#x}, {:#x})", start,
                     start + length, floor, m.mmap_top);
    }
    if (start < previous_end) {
      return Invalid("memory region at {:#x} overlaps the region ending at {:#x}", start,
                     previous_end);
    }
    previous_end = start + length;
  }
  // Protections: page-aligned spans of user memory (decoding checked order and overlap).
  if (m.protections) {
    uint64_t previous = 0;
    for (const auto& [start, span] : *m.protections) {
      if (start % kPageSize != 0 || span.end % kPageSize != 0 || span.end <= start ||
          start < x86::kUserBase || span.end > m.ram_size || start < previous ||
          span.prot > kProtAll) {
        return Invalid(
            "protection span [{:#x}, {:#x}) prot {:#x} is not a page-aligned range of "
            "user memory after the previous one",
            start, span.end, span.prot);
      }
      previous = span.end;
    }
  }
  return {};
}

// An eventfd's, timerfd's or epoll instance's record (its interests' fds are checked against
// the table by ValidateFiles).
Result<void> ValidateEventObject(const FdRecord& fd) {
  if (fd.stdio_fd != -1) return Invalid("fd {} has stdio fd {}", fd.fd, fd.stdio_fd);
  if (!fd.path.empty()) return Invalid("fd {} has a path", fd.fd);
  if (fd.offset != 0) return Invalid("fd {} has offset {}", fd.fd, fd.offset);
  // O_RDWR, and what F_SETFL may add (O_NONBLOCK, O_APPEND, O_DIRECT, O_NOATIME).
  if ((fd.flags & ~(O_NONBLOCK | O_APPEND | O_DIRECT | O_NOATIME)) != O_RDWR) {
    return Invalid("fd {} has flags {:#x} (only O_RDWR and the F_SETFL flags)", fd.fd, fd.flags);
  }
  const EventRecord& e = fd.event;
  const bool timer = fd.kind == FileKind::kTimerfd;
  const bool epoll = fd.kind == FileKind::kEpoll;
  if (!epoll && !e.interests.empty()) return Invalid("fd {} has epoll interests", fd.fd);
  if (!timer && (e.clock != 0 || e.deadline_ns != 0 || e.interval_ns != 0)) {
    return Invalid("fd {} is no timerfd but has a timer setting", fd.fd);
  }
  if (fd.kind != FileKind::kEventfd && e.semaphore) {
    return Invalid("fd {} is no eventfd but has EFD_SEMAPHORE", fd.fd);
  }
  if (epoll && e.count != 0) return Invalid("fd {} is an epoll instance with a count", fd.fd);
  const bool signalfd = fd.kind == FileKind::kSignalfd;
  if (!signalfd && e.signal_mask != 0) return Invalid("fd {} is no signalfd but has a mask", fd.fd);
  if (signalfd && e.count != 0) return Invalid("fd {} is a signalfd with a count", fd.fd);
  constexpr uint64_t kUnreadable = SignalState::Bit(SIGKILL) | SignalState::Bit(SIGSTOP);
  if ((e.signal_mask & kUnreadable) != 0) {
    return Invalid("fd {}: a signalfd mask {:#x} with SIGKILL or SIGSTOP", fd.fd, e.signal_mask);
  }
  if (fd.kind == FileKind::kEventfd && e.count == ~uint64_t{0}) {
    return Invalid("fd {}: eventfd count {:#x} is past its maximum", fd.fd, e.count);
  }
  if (timer) {
    if (e.clock != CLOCK_REALTIME && e.clock != CLOCK_MONOTONIC && e.clock != CLOCK_BOOTTIME) {
      return Invalid("fd {}: timerfd clock {}", fd.fd, e.clock);
    }
    if (e.deadline_ns < 0 || e.interval_ns < 0 || e.deadline_ns >= kTimeLimitNs ||
        e.interval_ns >= kTimeLimitNs) {
      return Invalid("fd {}: timerfd time outside [0, 2^62) ns", fd.fd);
    }
  }
  if (e.interests.size() > static_cast<size_t>(FdTable::kMaxFds)) {
    return Invalid("fd {}: {} epoll interests", fd.fd, e.interests.size());
  }
  std::vector<bool> watched(FdTable::kMaxFds, false);
  for (const EpollInterestRecord& i : e.interests) {
    if (i.fd < 0 || i.fd >= FdTable::kMaxFds || i.fd == fd.fd) {
      return Invalid("epoll fd {} watches fd {}", fd.fd, i.fd);
    }
    if (watched[static_cast<size_t>(i.fd)]) {
      return Invalid("epoll fd {} watches fd {} twice", fd.fd, i.fd);
    }
    watched[static_cast<size_t>(i.fd)] = true;
  }
  return {};
}

constexpr int32_t kMaxTid = 4'194'303;  // Linux's PID_MAX_LIMIT - 1: tids and pids

// Pipes: ids unique and not 0, sizes within their capacity.
Result<void> ValidatePipes(const std::vector<PipeRecord>& pipes) {
  if (pipes.size() > static_cast<size_t>(FdTable::kMaxFds)) {
    return Invalid("{} pipes, at most {} allowed", pipes.size(), FdTable::kMaxFds);
  }
  std::set<uint64_t> pipe_ids;
  for (const PipeRecord& p : pipes) {
    if (p.id == 0 || !pipe_ids.insert(p.id).second) {
      return Invalid("pipe id {} is 0 or appears twice", p.id);
    }
    if (p.capacity < 4096 || p.capacity > PipeRecord::kMaxPipeCapacity) {
      return Invalid("pipe {} has capacity {}, not 4096..{}", p.id, p.capacity,
                     PipeRecord::kMaxPipeCapacity);
    }
    if (p.contents.size() > p.capacity) {
      return Invalid("pipe {} holds {} bytes, more than its capacity {}", p.id, p.contents.size(),
                     p.capacity);
    }
  }
  return {};
}

Result<void> ValidateFiles(const FilesRecord& f) {
  if (f.root_host_path) {
    FLURRY_TRY(CheckString("root directory", *f.root_host_path, kMaxDescriptorPathBytes, true));
  } else if (f.root_writable) {
    return Invalid("root is writable but there is no root directory");
  }
  FLURRY_TRY(CheckString("working directory", f.cwd, kMaxDescriptorPathBytes, true));
  if (!f.root_host_path && f.cwd != "/") {
    return Invalid("working directory \"{}\" without a root directory", f.cwd);
  }
  std::vector<bool> used(FdTable::kMaxFds, false);
  for (const FdRecord& fd : f.fds) {
    if (fd.fd < 0 || fd.fd >= FdTable::kMaxFds) {
      return Invalid("fd {} is outside 0..{}", fd.fd, FdTable::kMaxFds - 1);
    }
    if (used[fd.fd]) return Invalid("fd {} appears twice", fd.fd);
    used[fd.fd] = true;
    if (fd.flags < 0) return Invalid("fd {} has invalid open flags {:#x}", fd.fd, fd.flags);
    if (fd.offset < 0) return Invalid("fd {} has negative offset {}", fd.fd, fd.offset);
    if (!IsEventObject(fd.kind) && fd.event != EventRecord{}) {
      return Invalid("fd {} is no eventfd, timerfd, epoll instance or signalfd but has their state",
                     fd.fd);
    }
    switch (fd.kind) {
      case FileKind::kStdio:
        if (fd.stdio_fd < 0 || fd.stdio_fd > 2) {
          return Invalid("fd {} is host stdio fd {}, not 0, 1 or 2", fd.fd, fd.stdio_fd);
        }
        if (!fd.path.empty()) return Invalid("fd {} is host stdio but has a path", fd.fd);
        break;
      case FileKind::kRegular:
      case FileKind::kDirectory:
      case FileKind::kOther:
        if (fd.stdio_fd != -1) {
          return Invalid("fd {} is not host stdio but has stdio fd {}", fd.fd, fd.stdio_fd);
        }
        if (!f.root_host_path) {
          return Invalid("fd {} is a file but there is no root directory", fd.fd);
        }
        FLURRY_TRY(
            CheckString(fmt::format("fd {} path", fd.fd), fd.path, kMaxDescriptorPathBytes, true));
        break;
      case FileKind::kPipe:
        if (fd.stdio_fd != -1) {
          return Invalid("fd {} is a pipe but has stdio fd {}", fd.fd, fd.stdio_fd);
        }
        if (!fd.path.empty()) return Invalid("fd {} is a pipe but has a path", fd.fd);
        if ((fd.flags & O_ACCMODE) != O_RDONLY && (fd.flags & O_ACCMODE) != O_WRONLY) {
          return Invalid("fd {} is a pipe end neither read-only nor write-only", fd.fd);
        }
        if (fd.offset != 0) return Invalid("fd {} is a pipe but has offset {}", fd.fd, fd.offset);
        if (fd.pipe != 0 && std::none_of(f.pipes.begin(), f.pipes.end(),
                                         [&](const PipeRecord& p) { return p.id == fd.pipe; })) {
          return Invalid("fd {} is an end of pipe {}, which is not recorded", fd.fd, fd.pipe);
        }
        break;
      case FileKind::kEventfd:
      case FileKind::kTimerfd:
      case FileKind::kEpoll:
      case FileKind::kSignalfd:
        FLURRY_TRY(ValidateEventObject(fd));
        break;
      case FileKind::kDevice:
        if (fd.stdio_fd != -1) return Invalid("fd {} has stdio fd {}", fd.fd, fd.stdio_fd);
        if (!IsHostDevicePath(fd.path)) {
          return Invalid(
              "fd {} is a device but its path is none of /dev/null, /dev/zero, "
              "/dev/full, /dev/random, /dev/urandom",
              fd.fd);
        }
        break;
      default:
        return Invalid("fd {} has unknown kind {}", fd.fd, static_cast<int>(fd.kind));
    }
  }
  for (const FdRecord& fd : f.fds) {
    if (fd.shares_with >= 0) {
      // An earlier record of the same open file: same kind, path and flags, itself not shared.
      const auto same = std::find_if(f.fds.begin(), f.fds.end(),
                                     [&fd](const FdRecord& o) { return o.fd == fd.shares_with; });
      if (fd.shares_with >= fd.fd || same == f.fds.end() ||
          same - f.fds.begin() >= &fd - f.fds.data() || same->shares_with >= 0 ||
          same->kind != fd.kind || same->path != fd.path || same->flags != fd.flags) {
        return Invalid("fd {} shares fd {}, which is no earlier record of the same file", fd.fd,
                       fd.shares_with);
      }
    }
    for (const EpollInterestRecord& i : fd.event.interests) {
      if (!used[static_cast<size_t>(i.fd)]) {
        return Invalid("epoll fd {} watches fd {}, which is not open", fd.fd, i.fd);
      }
    }
    if (fd.pipe != 0 && fd.kind != FileKind::kPipe) {
      return Invalid("fd {} is no pipe but names pipe {}", fd.fd, fd.pipe);
    }
  }
  FLURRY_TRY(ValidatePipes(f.pipes));
  for (const PipeRecord& p : f.pipes) {
    if (std::none_of(f.fds.begin(), f.fds.end(), [&](const FdRecord& fd) {
          return fd.kind == FileKind::kPipe && fd.pipe == p.id;
        })) {
      return Invalid("pipe {} is recorded but no fd is an end of it", p.id);
    }
  }
  return {};
}

// The processes of a VM of several processes (in its init's descriptor, `d`).
Result<void> ValidateProcesses(const VmDescriptor& d) {
  const ProcessesRecord& r = *d.processes;
  if (r.processes.size() < 2 || r.processes.size() > ProcessesRecord::kMaxProcesses) {
    return Invalid("{} processes recorded, not 2..{}", r.processes.size(),
                   ProcessesRecord::kMaxProcesses);
  }
  if (r.processes.front().pid != d.identity.pid) {
    return Invalid("the first process recorded is {}, not the descriptor's {}",
                   r.processes.front().pid, d.identity.pid);
  }
  if (r.last_id < 1 || r.last_id > kMaxTid) {
    return Invalid("the newest process id {} is outside [1, {}]", r.last_id, kMaxTid);
  }
  std::set<int32_t> pids;
  for (const ProcessRecord& p : r.processes) {
    if (p.pid < 1 || p.pid > kMaxTid || !pids.insert(p.pid).second) {
      return Invalid("process id {} is outside [1, {}] or appears twice", p.pid, kMaxTid);
    }
  }
  for (size_t i = 0; i < r.processes.size(); ++i) {
    const ProcessRecord& p = r.processes[i];
    const bool init = i == 0;
    if (init ? p.ppid != 0 : p.ppid == p.pid || (p.ppid != 0 && !pids.contains(p.ppid))) {
      return Invalid("process {} has parent {}", p.pid, p.ppid);
    }
    if (p.pgid < 1 || p.pgid > kMaxTid || p.sid < 1 || p.sid > kMaxTid) {
      return Invalid("process {} is in group {} of session {}", p.pid, p.pgid, p.sid);
    }
    if (init && p.zombie) return Invalid("init (process {}) is recorded ended", p.pid);
    if (!p.zombie && p.wait_status != 0) {
      return Invalid("process {} runs but has a wait status", p.pid);
    }
    if (p.exit_signal > static_cast<uint32_t>(kMaxSignal)) {
      return Invalid("process {} has exit signal {}", p.pid, p.exit_signal);
    }
    if (p.sender < 0 || p.sender > kMaxTid) {
      return Invalid("process {} has signal sender {}", p.pid, p.sender);
    }
  }
  return ValidatePipes(r.pipes);
}

Result<void> ValidateSignals(const SignalState& s) {
  // Times past 2^62 ns would overflow the VMM's clock arithmetic (guest to host time).
  if (s.real_timer.deadline_ns >= kTimeLimitNs || s.real_timer.interval_ns >= kTimeLimitNs) {
    return Invalid("interval timer deadline {} ns, interval {} ns past 2^62",
                   s.real_timer.deadline_ns, s.real_timer.interval_ns);
  }
  const GuestSigaction& zero = s.actions[0];
  if (zero.handler != 0 || zero.flags != 0 || zero.restorer != 0 || zero.mask != 0) {
    return Invalid("action for signal 0");
  }
  for (int signal = 1; signal <= kMaxSignal; ++signal) {
    const GuestSigaction& a = s.actions[signal];
    if ((signal == SIGKILL || signal == SIGSTOP) && a.handler != 0) {
      return Invalid("signal {} cannot have a handler", signal);
    }
    if (a.mask & kUnblockableSignals) {
      return Invalid("signal {} action mask {:#x} blocks SIGKILL or SIGSTOP", signal, a.mask);
    }
  }
  if (s.blocked & kUnblockableSignals) {
    return Invalid("blocked mask {:#x} blocks SIGKILL or SIGSTOP", s.blocked);
  }
  if (s.altstack.flags != 0 && s.altstack.flags != SS_DISABLE) {
    return Invalid("alternate signal stack flags {:#x} (valid: 0, SS_DISABLE)", s.altstack.flags);
  }
  return {};
}

Result<void> ValidatePages(const PageMapRecord& p, uint64_t ram_size) {
  const uint64_t ram_pages = ram_size / kPageSize;
  uint64_t previous_end = 0;
  for (size_t i = 0; i < p.present.size(); ++i) {
    const PageMapRecord::Run& run = p.present[i];
    if (run.page_count == 0)
      return Invalid("page run {} at page {:#x} is empty", i, run.first_page);
    if (run.first_page > ram_pages || run.page_count > ram_pages - run.first_page) {
      return Invalid("page run {} [{:#x}, +{:#x}) is outside RAM ({:#x} pages)", i, run.first_page,
                     run.page_count, ram_pages);
    }
    if (i > 0 && run.first_page < previous_end) {
      return Invalid("page run {} at page {:#x} overlaps or precedes the run ending at {:#x}", i,
                     run.first_page, previous_end);
    }
    previous_end = run.first_page + run.page_count;
  }
  return {};
}

// Bounded by 2^62 ns (146 years) so that offsets and deadlines computed from them cannot
// overflow 64 bits. The start time is not compared: a VM restored from a descriptor without a
// clock record (older writers) may have a start time from another host's clock, ahead of its
// own (sysinfo then reports uptime 0).
Result<void> ValidateClock(const ClockCapture& c) {
  constexpr int64_t kLimit = kTimeLimitNs;
  if (c.guest_monotonic_ns < 0 || c.guest_monotonic_ns >= kLimit) {
    return Invalid("guest monotonic time {} ns at capture is outside [0, 2^62)",
                   static_cast<uint64_t>(c.guest_monotonic_ns));
  }
  if (c.host_realtime_ns < 0 || c.host_realtime_ns >= kLimit) {
    return Invalid("host realtime {} ns at capture is outside [0, 2^62)", c.host_realtime_ns);
  }
  return {};
}

Result<void> ValidateThreads(const VmDescriptor& d) {
  if (d.threads.size() > static_cast<size_t>(kMaxThreads)) {
    return Invalid("{} threads, at most {} allowed", d.threads.size(), kMaxThreads);
  }
  if (d.signals.thread_pending & kUnblockableSignals) {
    return Invalid("SIGKILL or SIGSTOP pending for one thread");
  }
  std::set<int32_t> tids{d.identity.tid};
  for (const ThreadRecord& t : d.threads) {
    if (t.tid < 1 || t.tid > kMaxTid) {
      return Invalid("thread id {} is outside [1, {}]", t.tid, kMaxTid);
    }
    if (!tids.insert(t.tid).second) return Invalid("thread id {} appears twice", t.tid);
    if (auto cpu = ValidateUserCpu(t.cpu, d.memory.ram_size); !cpu) {
      constexpr std::string_view kPrefix = "invalid descriptor: ";
      std::string_view why = cpu.error().message();
      if (why.starts_with(kPrefix)) why.remove_prefix(kPrefix.size());
      return Invalid("thread {}: {}", t.tid, why);
    }
    if ((t.blocked | t.thread_pending) & kUnblockableSignals) {
      return Invalid("thread {} blocks, or has pending, SIGKILL or SIGSTOP", t.tid);
    }
    if (t.altstack.flags != 0 && t.altstack.flags != SS_DISABLE) {
      return Invalid("thread {}: alternate signal stack flags {:#x} (valid: 0, SS_DISABLE)", t.tid,
                     t.altstack.flags);
    }
  }
  return {};
}

// timer_create's timers. A SIGEV_THREAD_ID timer may name a thread that has ended (it stops
// when next due); a queued one's signal is pending for its thread, which then exists.
Result<void> ValidateTimers(const VmDescriptor& d) {
  const std::vector<PosixTimer>& timers = d.signals.timers;
  if (timers.size() > static_cast<size_t>(SignalState::kMaxTimers)) {
    return Invalid("{} POSIX timers, at most {} allowed", timers.size(), SignalState::kMaxTimers);
  }
  int32_t previous = -1;
  for (const PosixTimer& t : timers) {
    if (t.id <= previous || t.id >= SignalState::kMaxTimers) {
      return Invalid("POSIX timer id {} is not ascending in [0, {})", t.id,
                     SignalState::kMaxTimers);
    }
    previous = t.id;
    if (!IsTimerClock(t.clock)) return Invalid("POSIX timer {}: clock {}", t.id, t.clock);
    const bool none = t.notify == kSigevNone;
    const bool thread = t.notify == kSigevThreadId;
    if (!none && !thread && t.notify != kSigevSignal) {
      return Invalid("POSIX timer {}: notify {} (valid: 0, 1, 4)", t.id, t.notify);
    }
    if (none ? t.signal != 0 : t.signal < 1 || t.signal > kMaxSignal) {
      return Invalid("POSIX timer {}: signal {}", t.id, t.signal);
    }
    if (thread ? (t.tid < 1 || SignalState::Bit(t.signal) & kUnblockableSignals) : t.tid != 0) {
      return Invalid("POSIX timer {}: thread {} for signal {}", t.id, t.tid, t.signal);
    }
    if (t.deadline_ns < 0 || t.interval_ns < 0 || t.deadline_ns >= kTimeLimitNs ||
        t.interval_ns >= kTimeLimitNs || (!t.armed() && t.interval_ns != 0)) {
      return Invalid("POSIX timer {}: deadline {} ns, interval {} ns", t.id, t.deadline_ns,
                     t.interval_ns);
    }
    if (t.overrun < 0 || t.queued_overrun < 0 ||
        (!t.queued && (t.behind_plain || t.queued_overrun != 0)) || (none && t.queued)) {
      return Invalid("POSIX timer {}: queued {}, overruns {} and {}", t.id, t.queued, t.overrun,
                     t.queued_overrun);
    }
    if (!t.queued) continue;
    uint64_t target = d.signals.pending;
    if (thread && t.tid == d.identity.tid) {
      target = d.signals.thread_pending;
    } else if (thread) {
      auto it = std::find_if(d.threads.begin(), d.threads.end(),
                             [&t](const ThreadRecord& r) { return r.tid == t.tid; });
      target = it == d.threads.end() ? 0 : it->thread_pending;
    }
    if ((target & SignalState::Bit(t.signal)) == 0) {
      return Invalid("POSIX timer {}: its signal {} is queued but not pending", t.id, t.signal);
    }
  }
  return {};
}

}  // namespace

Result<void> ValidateDescriptor(const VmDescriptor& d) {
  FLURRY_TRY(CheckString("cpu vendor", d.cpu.vendor, kMaxVendorBytes, false));
  FLURRY_TRY(CheckString("backend", d.backend, kMaxBackendBytes, false));
  FLURRY_TRY(ValidateIdentity(d.identity));
  FLURRY_TRY(ValidateMemory(d.memory));
  FLURRY_TRY(ValidateUserCpu(d.vcpu, d.memory.ram_size));  // after the memory: uses ram_size
  FLURRY_TRY(ValidateFiles(d.files));
  FLURRY_TRY(ValidateSignals(d.signals));
  FLURRY_TRY(ValidatePages(d.pages, d.memory.ram_size));
  if (d.clone.clone_id < 0) return Invalid("clone id {} is negative", d.clone.clone_id);
  if (d.clock) FLURRY_TRY(ValidateClock(*d.clock));
  FLURRY_TRY(ValidateThreads(d));  // after the memory: uses ram_size
  FLURRY_TRY(ValidateTimers(d));
  if (d.processes) FLURRY_TRY(ValidateProcesses(d));
  return {};
}

}  // namespace flurry
