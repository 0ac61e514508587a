#include "snapshot/descriptor_text.h"

#include <fcntl.h>
#include <fmt/format.h>

#include <csignal>
#include <cstring>
#include <ctime>
#include <iterator>
#include <string_view>

#include "arch/x86_64/layout.h"

namespace flurry {
namespace {

constexpr const char* kIndent = "            ";  // continuation lines line up with values

// "512 bytes", "4 KiB", "1.5 MiB", "64 GiB".
std::string HumanBytes(uint64_t bytes) {
  static constexpr const char* kUnits[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024) return fmt::format("{} bytes", bytes);
  double value = static_cast<double>(bytes) / 1024;
  size_t unit = 0;
  while (value >= 1024 && unit + 1 < std::size(kUnits)) {
    value /= 1024;
    ++unit;
  }
  if (value == static_cast<double>(static_cast<uint64_t>(value))) {
    return fmt::format("{} {}", static_cast<uint64_t>(value), kUnits[unit]);
  }
  return fmt::format("{:.1f} {}", value, kUnits[unit]);
}

std::string Range(uint64_t start, uint64_t end) {
  return fmt::format("[{:#x}, {:#x})  {}", start, end, HumanBytes(end > start ? end - start : 0));
}

// A guest or host string (paths are bytes) made safe for one terminal line: control bytes and
// backslashes become \xNN escapes.
std::string Printable(std::string_view value) {
  std::string out;
  out.reserve(value.size());
  for (char c : value) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || c == '\\') {
      out += fmt::format("\\x{:02x}", byte);
    } else {
      out += c;
    }
  }
  return out;
}

const char* KindName(FileKind kind) {
  switch (kind) {
    case FileKind::kStdio:
      return "stdio";
    case FileKind::kRegular:
      return "file";
    case FileKind::kDirectory:
      return "directory";
    case FileKind::kOther:
      return "other";
    case FileKind::kPipe:
      return "pipe";
    case FileKind::kEventfd:
      return "eventfd";
    case FileKind::kTimerfd:
      return "timerfd";
    case FileKind::kEpoll:
      return "epoll";
    case FileKind::kDevice:
      return "device";
    case FileKind::kSignalfd:
      return "signalfd";
  }
  return "unknown";
}

// What an eventfd, timerfd, epoll instance or signalfd holds, on one line.
std::string EventText(const FdRecord& fd) {
  const EventRecord& e = fd.event;
  switch (fd.kind) {
    case FileKind::kEventfd:
      return fmt::format("count {}{}", e.count, e.semaphore ? " (semaphore)" : "");
    case FileKind::kTimerfd:
      return fmt::format("clock {}, next at {} ns, every {} ns, {} unread", e.clock, e.deadline_ns,
                         e.interval_ns, e.count);
    case FileKind::kSignalfd:
      return fmt::format("mask {:#x}", e.signal_mask);
    default: {
      std::string text = fmt::format("{} watched:", e.interests.size());
      for (const EpollInterestRecord& i : e.interests) {
        text += fmt::format(" fd {} ({:#x}, data {:#x})", i.fd, i.events, i.data);
      }
      return text;
    }
  }
}

// The kernel's O_LARGEFILE (glibc's is 0 on x86-64, but F_GETFL reports the kernel's bit).
constexpr int kKernelLargefile = 0100000;

// The open flags F_GETFL reports, e.g. "O_WRONLY|O_APPEND" (unnamed bits in hex).
std::string OpenFlags(int32_t flags) {
  std::string out;
  switch (flags & O_ACCMODE) {
    case O_RDONLY:
      out = "O_RDONLY";
      break;
    case O_WRONLY:
      out = "O_WRONLY";
      break;
    case O_RDWR:
      out = "O_RDWR";
      break;
    default:
      out = "O_ACCMODE";
      break;
  }
  uint32_t rest = static_cast<uint32_t>(flags) & ~static_cast<uint32_t>(O_ACCMODE);
  static constexpr std::pair<int, const char*> kNames[] = {
      {O_PATH, "O_PATH"},         {O_APPEND, "O_APPEND"},
      {O_NONBLOCK, "O_NONBLOCK"}, {O_DIRECTORY, "O_DIRECTORY"},
      {O_NOFOLLOW, "O_NOFOLLOW"}, {O_SYNC, "O_SYNC"},
      {O_DSYNC, "O_DSYNC"},       {O_DIRECT, "O_DIRECT"},
      {O_NOATIME, "O_NOATIME"},   {kKernelLargefile, "O_LARGEFILE"}};
  for (const auto& [bit, name] : kNames) {
    if ((rest & static_cast<uint32_t>(bit)) == static_cast<uint32_t>(bit)) {
      out += '|';
      out += name;
      rest &= ~static_cast<uint32_t>(bit);
    }
  }
  if (rest != 0) out += fmt::format("|{:#x}", rest);
  return out;
}

std::string SignalName(int signal) {
  const char* abbrev = sigabbrev_np(signal);
  return abbrev ? fmt::format("SIG{}", abbrev) : fmt::format("signal {}", signal);
}

std::string Handler(uint64_t handler) {
  if (handler == 0) return "SIG_DFL";
  if (handler == 1) return "SIG_IGN";
  return fmt::format("{:#x}", handler);
}

std::string TimerClockName(int32_t clock) {
  switch (clock) {
    case CLOCK_REALTIME:
      return "CLOCK_REALTIME";
    case CLOCK_MONOTONIC:
      return "CLOCK_MONOTONIC";
    case CLOCK_BOOTTIME:
      return "CLOCK_BOOTTIME";
    case CLOCK_TAI:
      return "CLOCK_TAI";
    default:
      return fmt::format("clock {}", clock);
  }
}

// Nanoseconds as "S.NNNNNNNNN s".
std::string Seconds(uint64_t ns) {
  return fmt::format("{}.{:09} s", ns / 1000000000, ns % 1000000000);
}

// The capture instant: the guest's monotonic time and the host's wall-clock time (UTC).
std::string Clock(const std::optional<ClockCapture>& clock) {
  if (!clock) return "not recorded (older writer): a restore reads the host's monotonic clock";
  const time_t seconds = static_cast<time_t>(clock->host_realtime_ns / 1000000000);
  std::tm utc{};
  char date[32] = "?";
  if (gmtime_r(&seconds, &utc) != nullptr) std::strftime(date, sizeof date, "%F %T", &utc);
  return fmt::format("CLOCK_MONOTONIC {} at host CLOCK_REALTIME {}.{:09} UTC",
                     Seconds(static_cast<uint64_t>(clock->guest_monotonic_ns)), date,
                     clock->host_realtime_ns % 1000000000);
}

}  // namespace

std::string DescribeDescriptor(const VmDescriptor& d, size_t encoded_size,
                               uint32_t format_version) {
  std::string out;
  auto line = [&out](std::string_view label, const std::string& value) {
    out += fmt::format("{:<12}{}\n", label, value);
  };

  out += fmt::format(
      "flurry VM descriptor, format version {}{}, {} bytes encoded\n", format_version,
      format_version == VmDescriptor::kFormatVersion ||
              format_version == VmDescriptor::kFormatVersionProcesses
          ? ""
          : fmt::format(" (shown converted to version {})", VmDescriptor::kFormatVersion),
      encoded_size);
  line("cpu", d.cpu.ToString());
  line("clone", fmt::format("family {:016x}, clone {}{}", d.clone.family_id, d.clone.clone_id,
                            d.clone.clone_id == 0 ? " (original)" : ""));
  line("started", fmt::format("CLOCK_MONOTONIC {}", Seconds(d.start_time_ns)));
  line("captured", Clock(d.clock));

  line("backend", d.backend.empty() ? std::string("unknown") : Printable(d.backend));
  const x86::UserRegs& r = d.vcpu.regs;
  line("registers",
       fmt::format("rip {:#018x}  rsp {:#018x}  rflags {:#x}", r.rip, r.rsp, r.rflags));
  out += fmt::format("{}rax {:#018x}  rbx {:#018x}  rcx {:#018x}  rdx {:#018x}\n", kIndent, r.rax,
                     r.rbx, r.rcx, r.rdx);
  out += fmt::format("{}rsi {:#018x}  rdi {:#018x}  rbp {:#018x}  r8  {:#018x}\n", kIndent, r.rsi,
                     r.rdi, r.rbp, r.r8);
  out += fmt::format("{}r9  {:#018x}  r10 {:#018x}  r11 {:#018x}  r12 {:#018x}\n", kIndent, r.r9,
                     r.r10, r.r11, r.r12);
  out += fmt::format("{}r13 {:#018x}  r14 {:#018x}  r15 {:#018x}\n", kIndent, r.r13, r.r14, r.r15);
  out += fmt::format("{}fs base {:#x}  gs base {:#x}\n", kIndent, r.fs_base, r.gs_base);
  std::string xsave = "empty (initial FPU state)";
  if (d.vcpu.xsave.size() >= x86::UserCpuState::kMinXsaveBytes) {  // validated: has a header
    uint64_t xstate_bv;
    std::memcpy(&xstate_bv, d.vcpu.xsave.data() + 512, sizeof(xstate_bv));
    xsave = fmt::format("{} bytes, XSTATE_BV {:#x}", d.vcpu.xsave.size(), xstate_bv);
  } else if (!d.vcpu.xsave.empty()) {
    xsave = fmt::format("{} bytes", d.vcpu.xsave.size());
  }
  line("extended", fmt::format("xcr0 {:#x}, xsave {}", d.vcpu.xcr0, xsave));

  const MemoryLayoutRecord& m = d.memory;
  line("memory", fmt::format("ram {}", HumanBytes(m.ram_size)));
  out += fmt::format("{}image  {}\n", kIndent, Range(m.image_start, m.image_end));
  out += fmt::format("{}brk    {}\n", kIndent, Range(m.brk_start, m.brk));
  uint64_t mapped = 0;
  for (const auto& [start, length] : m.regions) mapped += length;
  if (m.regions.empty()) {
    out += fmt::format("{}mmap   no regions, below {:#x}\n", kIndent, m.mmap_top);
  } else {
    out += fmt::format("{}mmap   {} region{}, {}, in [{:#x}, {:#x})\n", kIndent, m.regions.size(),
                       m.regions.size() == 1 ? "" : "s", HumanBytes(mapped),
                       m.regions.begin()->first, m.mmap_top);
  }
  out += fmt::format("{}stack  {}\n", kIndent, Range(m.stack_bottom, m.ram_size));
  if (!m.protections) {
    out += fmt::format("{}prot   not recorded (every mapped page read/write/execute)\n", kIndent);
  } else {
    // Bytes per protection, in the order r--, rw-, r-x, rwx, then the rest.
    uint64_t by_prot[8] = {};
    for (const auto& [start, span] : *m.protections) by_prot[span.prot & 7] += span.end - start;
    std::string parts;
    for (int prot : {1, 3, 5, 7, 0, 2, 4, 6}) {
      if (by_prot[prot] == 0) continue;
      const std::string name =
          std::string(prot & 1 ? "r" : "-") + (prot & 2 ? "w" : "-") + (prot & 4 ? "x" : "-");
      parts += fmt::format("{}{} {}", parts.empty() ? "" : ", ", name, HumanBytes(by_prot[prot]));
    }
    out += fmt::format("{}prot   {} span{}: {}\n", kIndent, m.protections->size(),
                       m.protections->size() == 1 ? "" : "s", parts);
  }

  uint64_t present = 0;
  for (const PageMapRecord::Run& run : d.pages.present) present += run.page_count;
  line("pages", fmt::format("{} run{}, {} pages present ({:.1f} MiB)", d.pages.present.size(),
                            d.pages.present.size() == 1 ? "" : "s", present,
                            static_cast<double>(present * x86::kPageSize) / (1 << 20)));

  const FilesRecord& f = d.files;
  line("files",
       fmt::format("root {}, cwd {}, {} fd{}",
                   f.root_host_path ? fmt::format("{} ({})", Printable(*f.root_host_path),
                                                  f.root_writable ? "read-write" : "read-only")
                                    : std::string("none"),
                   Printable(f.cwd), f.fds.size(), f.fds.size() == 1 ? "" : "s"));
  for (const FdRecord& fd : f.fds) {
    const std::string pipe =
        fd.pipe == 0 ? std::string("(no peer when restored)") : fmt::format("pipe {}", fd.pipe);
    std::string where = fd.kind == FileKind::kStdio  ? fmt::format("host fd {}", fd.stdio_fd)
                        : fd.kind == FileKind::kPipe ? pipe
                        : IsEventObject(fd.kind)     ? EventText(fd)
                                                     : Printable(fd.path);
    if (fd.shares_with >= 0) where += fmt::format(" (fd {}'s open file)", fd.shares_with);
    out += fmt::format("{}fd {:<4} {:<9} {}  {}  offset {}{}\n", kIndent, fd.fd, KindName(fd.kind),
                       where, OpenFlags(fd.flags), fd.offset, fd.cloexec ? "  cloexec" : "");
  }
  for (const PipeRecord& p : f.pipes) {
    out += fmt::format("{}pipe {}: {} byte{} unread, capacity {}\n", kIndent, p.id,
                       p.contents.size(), p.contents.size() == 1 ? "" : "s", p.capacity);
  }

  const SignalState& sig = d.signals;
  std::string altstack = sig.altstack.flags & SS_DISABLE
                             ? std::string("disabled")
                             : fmt::format("[{:#x}, +{:#x})", sig.altstack.sp, sig.altstack.size);
  int custom = 0;
  for (const GuestSigaction& a : sig.actions) {
    custom += a.handler != 0 || a.flags != 0 || a.restorer != 0 || a.mask != 0;
  }
  line("signals", fmt::format("blocked {:#x}, altstack {}, {} non-default action{}", sig.blocked,
                              altstack, custom, custom == 1 ? "" : "s"));
  for (size_t signal = 0; signal < sig.actions.size(); ++signal) {
    const GuestSigaction& a = sig.actions[signal];
    if (a.handler == 0 && a.flags == 0 && a.restorer == 0 && a.mask == 0) continue;
    out += fmt::format("{}{:<10} {}  flags {:#x}  restorer {:#x}  mask {:#x}\n", kIndent,
                       SignalName(static_cast<int>(signal)), Handler(a.handler), a.flags,
                       a.restorer, a.mask);
  }

  if (!sig.timers.empty()) {
    line("timers",
         fmt::format("{} POSIX timer{}", sig.timers.size(), sig.timers.size() == 1 ? "" : "s"));
  }
  for (const PosixTimer& t : sig.timers) {
    const std::string to = t.notify == 1 ? std::string("no signal")
                           : t.notify == 4
                               ? fmt::format("{} to thread {}", SignalName(t.signal), t.tid)
                               : SignalName(t.signal);
    const std::string when =
        t.deadline_ns == 0 ? std::string("disarmed")
                           : fmt::format("at {}", Seconds(static_cast<uint64_t>(t.deadline_ns)));
    const std::string every =
        t.interval_ns == 0
            ? std::string()
            : fmt::format(", every {}", Seconds(static_cast<uint64_t>(t.interval_ns)));
    out += fmt::format("{}timer {:<3} {}  {}  {}{}  value {:#x}{}\n", kIndent, t.id,
                       TimerClockName(t.clock), to, when, every, t.value,
                       t.queued ? "  signal pending" : "");
  }

  const ProcessIdentity& id = d.identity;
  line("identity", fmt::format("pid {}, ppid {}, tid {}, exe {}, hostname {}", id.pid, id.ppid,
                               id.tid, Printable(id.exe_path), Printable(id.hostname)));
  if (d.threads.empty()) {
    line("threads", "1 (the one above)");
  } else {
    line("threads", fmt::format("{}: the one above and, runnable:", d.threads.size() + 1));
    for (const ThreadRecord& t : d.threads) {
      out += fmt::format("{}tid {:<8} rip {:#018x}  rsp {:#018x}  blocked {:#x}\n", kIndent, t.tid,
                         t.cpu.regs.rip, t.cpu.regs.rsp, t.blocked);
    }
  }
  if (d.processes) {
    const ProcessesRecord& ps = *d.processes;
    line("processes", fmt::format("{}: this one (init) and the others, newest id {}",
                                  ps.processes.size(), ps.last_id));
    for (const ProcessRecord& p : ps.processes) {
      const std::string state =
          p.zombie ? fmt::format("ended, wait status {:#x}", p.wait_status) : std::string("runs");
      const std::string signals =
          p.signals != 0 ? fmt::format("  signals {:#x}", p.signals) : std::string();
      out += fmt::format("{}pid {:<8} ppid {:<8} pgid {:<8} sid {:<8} {}{}\n", kIndent, p.pid,
                         p.ppid, p.pgid, p.sid, state, signals);
    }
    for (const PipeRecord& p : ps.pipes) {
      out += fmt::format("{}pipe {}: {} byte{} unread, capacity {}\n", kIndent, p.id,
                         p.contents.size(), p.contents.size() == 1 ? "" : "s", p.capacity);
    }
  }
  return out;
}

}  // namespace flurry
