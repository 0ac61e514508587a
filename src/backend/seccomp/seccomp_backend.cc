#include "backend/seccomp/seccomp_backend.h"

#include <algorithm>
#include <csignal>
#include <cstring>

#include "arch/x86_64/cpu_features.h"
#include "arch/x86_64/exceptions.h"
#include "arch/x86_64/layout.h"

namespace flurry {
namespace {

x86::UserRegs FromStub(const volatile flurry_stub_regs& r, const x86::UserRegs& keep) {
  x86::UserRegs u = keep;  // FS/GS bases: the VMM's (only arch_prctl, trapped, changes them)
  u.rax = r.rax;
  u.rbx = r.rbx;
  u.rcx = r.rcx;
  u.rdx = r.rdx;
  u.rsi = r.rsi;
  u.rdi = r.rdi;
  u.rsp = r.rsp;
  u.rbp = r.rbp;
  u.r8 = r.r8;
  u.r9 = r.r9;
  u.r10 = r.r10;
  u.r11 = r.r11;
  u.r12 = r.r12;
  u.r13 = r.r13;
  u.r14 = r.r14;
  u.r15 = r.r15;
  u.rip = r.rip;
  u.rflags = r.rflags;
  return u;
}

void ToStub(const x86::UserRegs& u, volatile flurry_stub_regs& r) {
  r.rax = u.rax;
  r.rbx = u.rbx;
  r.rcx = u.rcx;
  r.rdx = u.rdx;
  r.rsi = u.rsi;
  r.rdi = u.rdi;
  r.rsp = u.rsp;
  r.rbp = u.rbp;
  r.r8 = u.r8;
  r.r9 = u.r9;
  r.r10 = u.r10;
  r.r11 = u.r11;
  r.r12 = u.r12;
  r.r13 = u.r13;
  r.r14 = u.r14;
  r.r15 = u.r15;
  r.rip = u.rip;
  r.rflags = u.rflags;
  r.fs_base = u.fs_base;
  r.gs_base = u.gs_base;
}

}  // namespace

Result<std::unique_ptr<SeccompBackend>> SeccompBackend::Create(const GuestLayout& layout) {
  auto backend = std::unique_ptr<SeccompBackend>(new SeccompBackend());
  backend->guard_start_ = layout.guard_start;
  backend->guard_end_ = layout.guard_start + x86::kHugePageSize;
  StubProcess stub = FLURRY_TRY(StubProcess::Launch(layout));
  FLURRY_TRY(backend->Drive(std::move(stub)));
  return backend;
}

SeccompBackend::~SeccompBackend() = default;

Result<void> SeccompBackend::Protect(const ProtectionMap& protections, uint64_t start,
                                     uint64_t length) {
  const uint64_t ram = memory_->size();
  if (start < x86::kUserBase) {  // the system pages are the stub's own
    if (length <= x86::kUserBase - start) return {};
    length -= x86::kUserBase - start;
    start = x86::kUserBase;
  }
  if (start >= ram) return {};
  length = std::min(length, ram - start);
  Result<void> result;
  protections.ForEachAccessRun(start, length, [&](uint64_t at, uint64_t len, uint8_t access) {
    if (!result) return;
    // Each piece around the guard (which has no mapping for mprotect to change).
    const std::pair<uint64_t, uint64_t> pieces[] = {{at, std::min(at + len, guard_start_)},
                                                    {std::max(at, guard_end_), at + len}};
    for (const auto& [from, to] : pieces) {
      if (from >= to) continue;
      volatile flurry_stub_shared& s = stub_.shared(selected_);
      s.args[0] = from;
      s.args[1] = to - from;
      s.args[2] = access;
      auto r = stub_.Command(selected_, FLURRY_STUB_CMD_MPROTECT);
      if (!r) {
        result = std::unexpected(r.error());
        return;
      }
      if (*r != 0) {
        result = FailErrno(static_cast<int>(-*r),
                           fmt::format("protecting guest memory [{:#x}, {:#x})", from, to));
        return;
      }
    }
  });
  return result;
}

Result<void> SeccompBackend::Drive(StubProcess stub) {
  FLURRY_TRY(stub.Adopt());
  UniqueFd mem = FLURRY_TRY(stub.OpenProc("mem"));
  UniqueFd pagemap = FLURRY_TRY(stub.OpenProc("pagemap"));
  const uint64_t ram = stub.shared().ram_size;
  stub_ = std::move(stub);
  memory_.reset();
  memory_.emplace(GuestMemory::Remote(
      ram, std::move(mem), std::move(pagemap), [this](uint64_t addr, uint64_t len) -> Result<void> {
        // Through the selected lane: stopped whenever the VMM discards memory.
        volatile flurry_stub_shared& s = stub_.shared(selected_);
        s.args[0] = addr;
        s.args[1] = len;
        s.args[2] = 4;  // MADV_DONTNEED
        int64_t r = FLURRY_TRY(stub_.Command(selected_, FLURRY_STUB_CMD_MADVISE));
        if (r != 0) {
          return FailErrno(static_cast<int>(-r), "discarding guest memory");
        }
        return {};
      }));
  for (int k = 0; k < FLURRY_STUB_MAX_LANES; ++k) {
    lanes_[k].exists = stub_.LaneExists(k);
    lanes_[k].stopped = true;
  }
  return {};
}

Result<int> SeccompBackend::AddLane() {
  int number = -1;
  for (int k = 1; k < FLURRY_STUB_MAX_LANES && number < 0; ++k) {
    if (!lanes_[k].exists) number = k;
  }
  if (number < 0) return Fail("the guest's stub runs {} lanes at most", FLURRY_STUB_MAX_LANES);
  if (!lane().stopped) return Fail("adding a lane: the selected lane {} is running", selected_);
  // Refused once a lane has been resumed since the batch started, or if the kernel counts
  // threads the VMM did not make (the fork token must not reach guest code:
  // StubProcess::AddLane).
  FLURRY_TRY(stub_.AddLane(selected_, number));
  lanes_[number] = Lane{};
  lanes_[number].exists = true;  // stopped, idle; its first LoadCpu loads everything
  return number;
}

Result<void> SeccompBackend::EndOtherLanes() {
  for (int k = 0; k < FLURRY_STUB_MAX_LANES; ++k) {
    if (lanes_[k].exists && !lanes_[k].stopped) {
      return Fail("ending the other lanes: lane {} runs guest code (stop it first)", k);
    }
  }
  FLURRY_TRY(stub_.EndOtherLanes(selected_));
  for (int k = 0; k < FLURRY_STUB_MAX_LANES; ++k) {
    if (k != selected_) lanes_[k] = Lane{};  // gone; a new lane of that number starts afresh
  }
  return {};
}

void SeccompBackend::Select(int lane) {
  if (LaneExists(lane)) selected_ = lane;
}

void SeccompBackend::SetIdle(int lane) {
  if (Valid(lane)) lanes_[lane].active = false;
}

Result<void> SeccompBackend::LoadCpu(const x86::UserCpuState& state) {
  Lane& l = lane();
  volatile flurry_stub_shared& s = stub_.shared(selected_);
  if (!state.xsave.empty()) {
    if (state.xsave.size() > FLURRY_STUB_XSAVE_MAX) {
      return Fail("the XSAVE image is {} bytes; at most {} are supported", state.xsave.size(),
                  FLURRY_STUB_XSAVE_MAX);
    }
    uint64_t xstate_bv = 0;
    if (state.xsave.size() >= 520) std::memcpy(&xstate_bv, state.xsave.data() + 512, 8);
    const uint64_t host = x86::HostXcr0();
    if (host != 0 && (xstate_bv & ~host) != 0) {
      return Fail("the FPU state uses XSAVE components {:#x} this host does not enable ({:#x})",
                  xstate_bv, host);
    }
    for (size_t i = 0; i < state.xsave.size(); ++i) s.xsave[i] = state.xsave[i];
    s.xsave_size = static_cast<uint32_t>(state.xsave.size());
    l.pending |= FLURRY_STUB_LOAD_FPU;
    l.fpu_fresh = false;
  } else if (l.fpu_fresh) {
    // A new thread's FPU holds whatever the stub's own code left: the initial state instead
    // (x87 control word 0x37f, MXCSR 0x1f80, no component in use).
    constexpr uint32_t kInitImage = x86::UserCpuState::kMinXsaveBytes;
    for (uint32_t i = 0; i < kInitImage; ++i) s.xsave[i] = 0;
    s.xsave[0] = 0x7f;
    s.xsave[1] = 0x03;
    s.xsave[24] = 0x80;
    s.xsave[25] = 0x1f;
    s.xsave_size = kInitImage;
    l.pending |= FLURRY_STUB_LOAD_FPU;
    l.fpu_fresh = false;
  }
  const bool fs_changed = !l.bases_loaded || state.regs.fs_base != l.regs.fs_base;
  const bool gs_changed = !l.bases_loaded || state.regs.gs_base != l.regs.gs_base;
  l.regs = state.regs;
  l.pending |= FLURRY_STUB_LOAD_REGS | (fs_changed ? FLURRY_STUB_LOAD_FS : 0) |
               (gs_changed ? FLURRY_STUB_LOAD_GS : 0);
  l.active = true;
  return {};
}

void SeccompBackend::CompleteSyscall(uint64_t rax) {
  lane().regs.rax = rax;
  lane().pending |= FLURRY_STUB_LOAD_REGS;
}

Result<GuestStop> SeccompBackend::Run() {
  StubProcess::LaneSet running = 0;
  for (int k = 0; k < FLURRY_STUB_MAX_LANES; ++k) {
    Lane& l = lanes_[k];
    if (!l.exists || !l.active) continue;
    if (l.stopped) {
      volatile flurry_stub_shared& s = stub_.shared(k);
      if (l.pending & (FLURRY_STUB_LOAD_REGS | FLURRY_STUB_LOAD_FS | FLURRY_STUB_LOAD_GS)) {
        ToStub(l.regs, s.regs);
      }
      s.resume_flags = l.pending;
      if ((l.pending & FLURRY_STUB_LOAD_FS) && (l.pending & FLURRY_STUB_LOAD_GS)) {
        l.bases_loaded = true;
      }
      l.pending = 0;
      l.stopped = false;
      stub_.Post(k, FLURRY_STUB_CMD_RESUME);
    }
    running |= StubProcess::LaneBit(k);
  }
  if (running == 0) return Fail("running the guest: no lane is active");
  return WaitForStop(running);
}

Result<std::optional<GuestStop>> SeccompBackend::WaitRunning() {
  StubProcess::LaneSet running = 0;
  for (int k = 0; k < FLURRY_STUB_MAX_LANES; ++k) {
    if (LaneRunning(k)) running |= StubProcess::LaneBit(k);
  }
  if (running == 0) return std::nullopt;
  return WaitForStop(running);
}

Result<GuestStop> SeccompBackend::WaitForStop(StubProcess::LaneSet running) {
  // A lane that stopped while the VMM served another comes first (WaitAny: round robin).
  const auto [stopped, event] = FLURRY_TRY(stub_.WaitAny(running));
  lanes_[stopped].stopped = true;
  selected_ = stopped;
  GuestStop stop = FLURRY_TRY(StopFromEvent(event));
  stop.lane = stopped;
  return stop;
}

Result<GuestStop> SeccompBackend::StopFromEvent(uint32_t event) {
  volatile flurry_stub_shared& s = stub_.shared(selected_);
  x86::UserRegs& cpu = lane().regs;
  cpu = FromStub(s.regs, cpu);
  switch (event) {
    case FLURRY_STUB_EVENT_SYSCALL:
      cpu.rax = s.syscall_nr;
      return GuestStop{GuestStop::Kind::kSyscall};
    case FLURRY_STUB_EVENT_KICKED:
      return GuestStop{GuestStop::Kind::kInterrupted};
    case FLURRY_STUB_EVENT_FAULT: {
      const int signo = s.signo;
      const uint64_t trapno = s.trapno;
      x86::FaultReport report;
      report.vector =
          trapno < static_cast<uint64_t>(x86::kExceptionCount) ? static_cast<int>(trapno) : 13;
      report.rip = cpu.rip;
      report.rsp = cpu.rsp;
      report.address = s.fault_addr;
      report.error_code = s.error_code;
      report.has_error_code = x86::VectorHasErrorCode(report.vector);
      GuestStop stop{GuestStop::Kind::kFault};
      stop.vector = report.vector;
      // The exception decides the signal, as under KVM (the host's signal says the same).
      stop.signal = trapno < static_cast<uint64_t>(x86::kExceptionCount)
                        ? x86::VectorSignal(report.vector)
                        : (signo > 0 && signo < 65 ? signo : SIGSEGV);
      stop.description = x86::DescribeFault(report);
      stop.report = report;
      if (report.vector == 3) {
        // A breakpoint reports the instruction after it: `int3` (CC) or `int $3` (CD 03).
        uint8_t before[2] = {};
        if (memory_->Read(cpu.rip - 2, before, 2)) {
          stop.replay_back = before[1] == 0xCC ? 1 : (before[0] == 0xCD && before[1] == 3 ? 2 : 0);
        }
      }
      return stop;
    }
    case FLURRY_STUB_EVENT_BAD_ARCH: {
      GuestStop stop{GuestStop::Kind::kFault};
      stop.vector = 13;
      stop.signal = SIGSEGV;
      stop.replay_back = 2;  // `int 0x80`, `sysenter`: RIP stands past them
      stop.description = fmt::format(
          "guest fault: 32-bit system call {} (int 0x80) at rip {:#x}, rsp {:#x} -> SIGSEGV",
          s.syscall_nr, cpu.rip, cpu.rsp);
      return stop;
    }
    default: {
      // Only a guest that scribbled over the stub's page gets here.
      GuestStop stop{GuestStop::Kind::kFault};
      stop.signal = SIGSYS;
      stop.description = fmt::format(
          "guest stopped: its stub reported event {} (the guest corrupted the "
          "stub's shared page) at rip {:#x}",
          event, cpu.rip);
      return stop;
    }
  }
}

Result<x86::UserCpuState> SeccompBackend::CaptureCpu() {
  x86::UserCpuState state;
  state.regs = lane().regs;
  state.xcr0 = x86::HostXcr0();
  // An image LoadCpu gave is still waiting in the shared page: that is the guest's FPU state.
  if ((lane().pending & FLURRY_STUB_LOAD_FPU) == 0) {
    FLURRY_TRY_CTX(stub_.Command(selected_, FLURRY_STUB_CMD_SAVE_FPU), "capturing the FPU state");
  }
  volatile flurry_stub_shared& s = stub_.shared(selected_);
  const uint32_t size = s.xsave_size;
  if (size > FLURRY_STUB_XSAVE_MAX ||
      (size != 0 && size < x86::UserCpuState::kMinXsaveBytes && size != 512)) {
    return Fail("the stub reported an XSAVE image of {} bytes", size);
  }
  state.xsave.resize(size);
  for (uint32_t i = 0; i < size; ++i) state.xsave[i] = s.xsave[i];
  return state;
}

void SeccompBackend::Interrupt() { stub_.Kick(); }

Result<void> SeccompBackend::PrepareFork(bool tied_to_parent) {
  // Needs the selected lane alone (EndOtherLanes): StubProcess::Fork checks, with the kernel.
  pending_child_.emplace(FLURRY_TRY(stub_.Fork(selected_, tied_to_parent)));
  return {};
}

void SeccompBackend::AfterForkInParent(bool child_exists) {
  // The new VMM process drives the forked stub now; without one, it goes.
  if (pending_child_ && child_exists) pending_child_->Release();
  pending_child_.reset();
}

Result<void> SeccompBackend::AfterForkInChild() {
  if (!pending_child_) return Fail("no forked stub to take over");
  StubProcess child = std::move(*pending_child_);
  pending_child_.reset();
  // Only the selected lane came along (fork() copies only the forking thread).
  const Lane keep = lane();
  if (keep.pending & FLURRY_STUB_LOAD_FPU) {
    // An image LoadCpu gave still waits in the parent's page: the child's page is new.
    volatile flurry_stub_shared& from = stub_.shared(selected_);
    volatile flurry_stub_shared& to = child.shared(selected_);
    const uint32_t size = std::min<uint32_t>(uint32_t{from.xsave_size}, FLURRY_STUB_XSAVE_MAX);
    for (uint32_t i = 0; i < size; ++i) to.xsave[i] = from.xsave[i];
    to.xsave_size = size;
  }
  stub_.ForgetInherited();  // the parent VMM drives it
  FLURRY_TRY_CTX(Drive(std::move(child)), "taking over the forked stub");
  for (int k = 0; k < FLURRY_STUB_MAX_LANES; ++k) {
    if (k != selected_) lanes_[k] = Lane{};
  }
  Lane& l = lane();
  l = keep;
  l.exists = true;
  l.stopped = true;
  // The child's frame holds the guest as it was at the fork; the VMM's view may be newer.
  l.pending = keep.pending | FLURRY_STUB_LOAD_REGS | FLURRY_STUB_LOAD_FS | FLURRY_STUB_LOAD_GS;
  return {};
}

}  // namespace flurry
