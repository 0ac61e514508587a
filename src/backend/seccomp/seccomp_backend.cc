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
      volatile flurry_stub_shared& s = stub_.shared();
      s.args[0] = from;
      s.args[1] = to - from;
      s.args[2] = access;
      auto r = stub_.Command(FLURRY_STUB_CMD_MPROTECT);
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
        volatile flurry_stub_shared& s = stub_.shared();
        s.args[0] = addr;
        s.args[1] = len;
        s.args[2] = 4;  // MADV_DONTNEED
        int64_t r = FLURRY_TRY(stub_.Command(FLURRY_STUB_CMD_MADVISE));
        if (r != 0) {
          return FailErrno(static_cast<int>(-r), "discarding guest memory");
        }
        return {};
      }));
  stopped_ = true;
  return {};
}

Result<void> SeccompBackend::LoadCpu(const x86::UserCpuState& state) {
  volatile flurry_stub_shared& s = stub_.shared();
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
    pending_ |= FLURRY_STUB_LOAD_FPU;
  }
  const bool fs_changed = !bases_loaded_ || state.regs.fs_base != regs_.fs_base;
  const bool gs_changed = !bases_loaded_ || state.regs.gs_base != regs_.gs_base;
  regs_ = state.regs;
  pending_ |= FLURRY_STUB_LOAD_REGS | (fs_changed ? FLURRY_STUB_LOAD_FS : 0) |
              (gs_changed ? FLURRY_STUB_LOAD_GS : 0);
  return {};
}

void SeccompBackend::CompleteSyscall(uint64_t rax) {
  regs_.rax = rax;
  pending_ |= FLURRY_STUB_LOAD_REGS;
}

Result<GuestStop> SeccompBackend::Run() {
  if (stopped_) {
    volatile flurry_stub_shared& s = stub_.shared();
    if (pending_ & (FLURRY_STUB_LOAD_REGS | FLURRY_STUB_LOAD_FS | FLURRY_STUB_LOAD_GS)) {
      ToStub(regs_, s.regs);
    }
    s.resume_flags = pending_;
    if ((pending_ & FLURRY_STUB_LOAD_FS) && (pending_ & FLURRY_STUB_LOAD_GS)) bases_loaded_ = true;
    pending_ = 0;
    stopped_ = false;
    stub_.Post(FLURRY_STUB_CMD_RESUME);
  }
  const uint32_t event = FLURRY_TRY(stub_.Wait());
  stopped_ = true;
  return StopFromEvent(event);
}

Result<GuestStop> SeccompBackend::StopFromEvent(uint32_t event) {
  volatile flurry_stub_shared& s = stub_.shared();
  regs_ = FromStub(s.regs, regs_);
  switch (event) {
    case FLURRY_STUB_EVENT_SYSCALL:
      regs_.rax = s.syscall_nr;
      return GuestStop{GuestStop::Kind::kSyscall};
    case FLURRY_STUB_EVENT_KICKED:
      return GuestStop{GuestStop::Kind::kInterrupted};
    case FLURRY_STUB_EVENT_FAULT: {
      const int signo = s.signo;
      const uint64_t trapno = s.trapno;
      x86::FaultReport report;
      report.vector =
          trapno < static_cast<uint64_t>(x86::kExceptionCount) ? static_cast<int>(trapno) : 13;
      report.rip = regs_.rip;
      report.rsp = regs_.rsp;
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
      return stop;
    }
    case FLURRY_STUB_EVENT_BAD_ARCH: {
      GuestStop stop{GuestStop::Kind::kFault};
      stop.vector = 13;
      stop.signal = SIGSEGV;
      stop.description = fmt::format(
          "guest fault: 32-bit system call {} (int 0x80) at rip {:#x}, rsp {:#x} -> SIGSEGV",
          s.syscall_nr, regs_.rip, regs_.rsp);
      return stop;
    }
    default: {
      // Only a guest that scribbled over the stub's page gets here.
      GuestStop stop{GuestStop::Kind::kFault};
      stop.signal = SIGSYS;
      stop.description = fmt::format(
          "guest stopped: its stub reported event {} (the guest corrupted the "
          "stub's shared page) at rip {:#x}",
          event, regs_.rip);
      return stop;
    }
  }
}

Result<x86::UserCpuState> SeccompBackend::CaptureCpu() {
  x86::UserCpuState state;
  state.regs = regs_;
  state.xcr0 = x86::HostXcr0();
  // An image LoadCpu gave is still waiting in the shared page: that is the guest's FPU state.
  if ((pending_ & FLURRY_STUB_LOAD_FPU) == 0) {
    FLURRY_TRY_CTX(stub_.Command(FLURRY_STUB_CMD_SAVE_FPU), "capturing the FPU state");
  }
  volatile flurry_stub_shared& s = stub_.shared();
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
  pending_child_.emplace(FLURRY_TRY(stub_.Fork(tied_to_parent)));
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
  stub_.ForgetInherited();  // the parent VMM drives it
  const uint32_t keep = pending_;
  FLURRY_TRY_CTX(Drive(std::move(child)), "taking over the forked stub");
  // The child's frame holds the guest as it was at the fork; the VMM's view may be newer.
  pending_ = keep | FLURRY_STUB_LOAD_REGS | FLURRY_STUB_LOAD_FS | FLURRY_STUB_LOAD_GS;
  return {};
}

}  // namespace flurry
