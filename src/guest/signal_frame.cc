#include "guest/signal_frame.h"

#include <fmt/format.h>

#include <algorithm>
#include <csignal>
#include <cstring>

#include "arch/x86_64/cpu_features.h"
#include "guest/posix_timers.h"

namespace flurry {
namespace {

constexpr uint64_t kRedZone = 128;
constexpr uint32_t kFpXstateMagic1 = 0x46505853;  // "FPXS", in the image's software bytes
constexpr uint32_t kFpXstateMagic2 = 0x46505845;  // "FPXE", just past the image
constexpr uint64_t kSwBytesOffset = 464;          // ..511: software-reserved (struct _fpx_sw_bytes)
constexpr uint64_t kXsaveHeaderOffset = 512;      // XSTATE_BV, XCOMP_BV, reserved: ..575
constexpr uint64_t kMxcsrOffset = 24;
constexpr uint8_t kXfeaturesFpSse = 0x3;
constexpr uint64_t kUcFpXstate = 0x1;
constexpr uint64_t kUcSigcontextSs = 0x2;
constexpr uint64_t kUcStrictRestoreSs = 0x4;
// Linux's user code and stack selectors, as a native process sees them in its sigcontext.
constexpr uint16_t kLinuxUserCs = 0x33;
constexpr uint16_t kLinuxUserSs = 0x2b;
// RFLAGS bits rt_sigreturn takes from the frame (Linux's FIX_EFLAGS): AC OF DF TF SF ZF AF PF
// CF RF. The rest (IF, IOPL, ...) stays as it is.
constexpr uint64_t kSigreturnFlags =
    0x40000 | 0x800 | 0x400 | 0x100 | 0x80 | 0x40 | 0x10 | 0x4 | 0x1 | 0x10000;
// Cleared for the handler, as Linux does: TF, DF, RF.
constexpr uint64_t kHandlerClearedFlags = 0x100 | 0x400 | 0x10000;
constexpr uint64_t kNeverBlocked = SignalState::Bit(SIGKILL) | SignalState::Bit(SIGSTOP);

bool AltstackEnabled(const GuestStack& s) { return (s.flags & SS_DISABLE) == 0 && s.size != 0; }

// The FPU's initial state (FNINIT + default MXCSR) in an XSAVE image of `size` bytes.
std::vector<uint8_t> InitialXsave(size_t size) {
  std::vector<uint8_t> image(size, 0);
  if (size < 32) return image;
  const uint16_t fcw = 0x37f;
  const uint32_t mxcsr = 0x1f80;
  std::memcpy(image.data(), &fcw, sizeof fcw);
  std::memcpy(image.data() + kMxcsrOffset, &mxcsr, sizeof mxcsr);
  // x87 and SSE marked present (with their initial values): every kernel then loads MXCSR.
  if (size >= kXsaveHeaderOffset + 8) image[kXsaveHeaderOffset] = kXfeaturesFpSse;
  return image;
}

// How much of an image goes in a frame: the host's XSAVE size for its XCR0 (what Linux puts
// there). The KVM backend's images are KVM's whole 4 KiB buffer, mostly unused.
size_t FrameXsaveSize(const x86::UserCpuState& cpu) {
  return std::min<size_t>(cpu.xsave.size(), std::max<uint64_t>(x86::HostXsaveSize(), 512));
}

void ToSigcontext(const x86::UserRegs& r, GuestSigcontext& c) {
  c.r8 = r.r8, c.r9 = r.r9, c.r10 = r.r10, c.r11 = r.r11;
  c.r12 = r.r12, c.r13 = r.r13, c.r14 = r.r14, c.r15 = r.r15;
  c.rdi = r.rdi, c.rsi = r.rsi, c.rbp = r.rbp, c.rbx = r.rbx;
  c.rdx = r.rdx, c.rax = r.rax, c.rcx = r.rcx, c.rsp = r.rsp;
  c.rip = r.rip, c.eflags = r.rflags;
  c.cs = kLinuxUserCs;
  c.ss = kLinuxUserSs;
}

void FromSigcontext(const GuestSigcontext& c, x86::UserRegs& r) {
  r.r8 = c.r8, r.r9 = c.r9, r.r10 = c.r10, r.r11 = c.r11;
  r.r12 = c.r12, r.r13 = c.r13, r.r14 = c.r14, r.r15 = c.r15;
  r.rdi = c.rdi, r.rsi = c.rsi, r.rbp = c.rbp, r.rbx = c.rbx;
  r.rdx = c.rdx, r.rax = c.rax, r.rcx = c.rcx, r.rsp = c.rsp;
  r.rip = c.rip;
  r.rflags = (r.rflags & ~kSigreturnFlags) | (c.eflags & kSigreturnFlags);
}

// Reads back the XSAVE image a handler returns with, as one the CPU will accept: components
// limited to XCR0, standard format, reserved header bytes and software bytes zero, MXCSR's
// reserved bits clear (Linux also refuses or repairs such images rather than fault on them).
Result<std::vector<uint8_t>> ReadXsave(GuestMemory& memory, uint64_t at, size_t size,
                                       uint64_t xcr0) {
  std::vector<uint8_t> image(size);
  FLURRY_TRY(memory.Read(at, image.data(), size));
  if (size >= kXsaveHeaderOffset + 64) {
    uint64_t xstate_bv = 0;
    std::memcpy(&xstate_bv, image.data() + kXsaveHeaderOffset, 8);
    xstate_bv &= xcr0 != 0 ? xcr0 : 3;
    std::memset(image.data() + kXsaveHeaderOffset, 0, 64);
    std::memcpy(image.data() + kXsaveHeaderOffset, &xstate_bv, 8);
  }
  if (size >= 512) std::memset(image.data() + kSwBytesOffset, 0, 512 - kSwBytesOffset);
  uint32_t mxcsr = 0;
  std::memcpy(&mxcsr, image.data() + kMxcsrOffset, sizeof mxcsr);
  mxcsr &= 0xffff;
  std::memcpy(image.data() + kMxcsrOffset, &mxcsr, sizeof mxcsr);
  return image;
}

// The FPU state a handler returns with (rt_sigreturn), as an image of cpu.xsave's size. An
// XSAVE frame (UC_FP_XSTATE, both magics) gives its components; otherwise only the legacy
// FXSAVE area counts (as Linux's fallback), the rest in its initial state.
Result<std::vector<uint8_t>> ReadFrameXsave(GuestMemory& memory, const GuestUcontext& uc,
                                            const x86::UserCpuState& cpu) {
  const size_t full = cpu.xsave.size();
  const uint64_t at = uc.mcontext.fpstate;
  if (at == 0) return InitialXsave(full);
  const size_t frame_size = FrameXsaveSize(cpu);
  bool whole = (uc.flags & kUcFpXstate) != 0 && frame_size >= x86::UserCpuState::kMinXsaveBytes;
  if (whole) {
    uint32_t sw[2] = {};
    FLURRY_TRY(memory.Read(at + kSwBytesOffset, sw, sizeof sw));
    uint32_t magic2 = 0;
    FLURRY_TRY(memory.Read(at + frame_size, &magic2, sizeof magic2));
    whole = sw[0] == kFpXstateMagic1 && sw[1] == frame_size + 4 && magic2 == kFpXstateMagic2;
  }
  std::vector<uint8_t> image =
      FLURRY_TRY(ReadXsave(memory, at, whole ? frame_size : std::min<size_t>(512, full), cpu.xcr0));
  if (!whole) {
    std::vector<uint8_t> initial = InitialXsave(full);
    std::copy(image.begin(), image.end(), initial.begin());
    if (full >= kXsaveHeaderOffset + 8) initial[kXsaveHeaderOffset] = kXfeaturesFpSse;
    return initial;
  }
  image.resize(full, 0);  // components past the host's size: none in use
  return image;
}

}  // namespace

Result<void> PushSignalFrame(GuestMemory& memory, SignalState& signals, const GuestSiginfo& info,
                             const FaultContext& fault, x86::UserCpuState& cpu) {
  const int signal = info.signo;
  GuestSigaction& action = signals.actions[signal];
  if ((action.flags & kSaRestorer) == 0 || action.restorer == 0) {
    return std::unexpected(Error(
        EFAULT, fmt::format("signal {}: the handler has no return address (SA_RESTORER)", signal)));
  }
  x86::UserRegs& regs = cpu.regs;
  uint64_t sp = regs.rsp - kRedZone;
  const bool nested_altstack = OnAltstack(signals.altstack, regs.rsp);
  bool entering_altstack = false;
  if ((action.flags & SA_ONSTACK) && AltstackEnabled(signals.altstack) && !nested_altstack) {
    sp = signals.altstack.sp + signals.altstack.size;
    entering_altstack = true;
  }
  // The XSAVE image, 64-byte aligned, with Linux's software bytes and end marker.
  uint64_t fpstate = 0;
  const size_t image_size = FrameXsaveSize(cpu);
  const bool xsave = image_size >= x86::UserCpuState::kMinXsaveBytes;
  if (image_size != 0) {
    sp = (sp - image_size - 4) & ~uint64_t{63};
    fpstate = sp;
  }
  sp = ((sp - sizeof(GuestRtSigframe)) & ~uint64_t{15}) - 8;  // as after a call: (RSP+8) % 16 == 0
  // A frame that does not fit on the alternate stack is not written past it (Linux forces
  // SIGSEGV then).
  if ((nested_altstack || entering_altstack) && !OnAltstack(signals.altstack, sp)) {
    return std::unexpected(Error(EFAULT, "the signal frame does not fit on the alternate stack"));
  }
  if (fpstate != 0) {
    std::vector<uint8_t> image(cpu.xsave.begin(), cpu.xsave.begin() + image_size);
    if (xsave) {
      const uint32_t sw[2] = {kFpXstateMagic1, static_cast<uint32_t>(image_size + 4)};
      std::memcpy(image.data() + kSwBytesOffset, sw, sizeof sw);
      std::memcpy(image.data() + kSwBytesOffset + 8, &cpu.xcr0, 8);  // xfeatures
      const uint32_t xstate_size = static_cast<uint32_t>(image_size);
      std::memcpy(image.data() + kSwBytesOffset + 16, &xstate_size, 4);
      image[kXsaveHeaderOffset] |= kXfeaturesFpSse;  // as Linux: the legacy area is always valid
    }
    FLURRY_TRY_CTX(memory.Write(fpstate, image.data(), image.size()),
                   "writing the signal frame's FPU state");
    FLURRY_TRY(memory.WriteObject(fpstate + image.size(), kFpXstateMagic2));
  }

  GuestRtSigframe frame{};
  frame.pretcode = action.restorer;
  frame.uc.flags = kUcSigcontextSs | kUcStrictRestoreSs | (xsave ? kUcFpXstate : 0);
  frame.uc.stack = signals.altstack;  // as stored: sp, size, 0 or SS_DISABLE, SS_AUTODISARM
  ToSigcontext(regs, frame.uc.mcontext);
  frame.uc.mcontext.err = fault.error_code;
  frame.uc.mcontext.trapno = fault.trapno;
  frame.uc.mcontext.cr2 = fault.cr2;
  // The mask the handler's return restores: rt_sigsuspend's saved one, else the current one.
  const uint64_t return_mask = signals.mask_saved ? signals.saved_mask : signals.blocked;
  frame.uc.mcontext.oldmask = return_mask;
  frame.uc.mcontext.fpstate = fpstate;
  frame.uc.sigmask = return_mask;
  frame.info = info;
  FLURRY_TRY_CTX(memory.WriteObject(sp, frame), "writing the signal frame");

  regs.rdi = static_cast<uint64_t>(signal);
  regs.rsi = sp + offsetof(GuestRtSigframe, info);
  regs.rdx = sp + offsetof(GuestRtSigframe, uc);
  regs.rax = 0;
  regs.rip = action.handler;
  regs.rsp = sp;
  regs.rflags &= ~kHandlerClearedFlags;
  if (!cpu.xsave.empty()) cpu.xsave = InitialXsave(cpu.xsave.size());

  if (entering_altstack && (signals.altstack.flags & kSsAutodisarm)) {
    signals.altstack = GuestStack{};  // until rt_sigreturn puts the saved one back
  }
  signals.mask_saved = false;
  signals.blocked |= action.mask;
  if ((action.flags & SA_NODEFER) == 0) signals.blocked |= SignalState::Bit(signal);
  signals.blocked &= ~kNeverBlocked;
  if (action.flags & SA_RESETHAND) {
    action.handler = reinterpret_cast<uint64_t>(SIG_DFL);
    action.flags &= ~static_cast<uint64_t>(SA_SIGINFO);
  }
  return {};
}

Result<void> PopSignalFrame(GuestMemory& memory, SignalState& signals, x86::UserCpuState& cpu) {
  const uint64_t at = cpu.regs.rsp - 8;
  const GuestUcontext uc =
      FLURRY_TRY_CTX(memory.ReadObject<GuestUcontext>(at + offsetof(GuestRtSigframe, uc)),
                     fmt::format("reading the signal frame at {:#x}", at));
  std::vector<uint8_t> xsave;
  if (!cpu.xsave.empty()) {
    xsave = FLURRY_TRY_CTX(ReadFrameXsave(memory, uc, cpu), "reading the signal frame's FPU state");
  }
  FromSigcontext(uc.mcontext, cpu.regs);
  cpu.xsave = std::move(xsave);
  signals.blocked = uc.sigmask & ~kNeverBlocked;
  // The alternate stack as the frame recorded it, by sigaltstack's rules (an invalid one is
  // ignored, as Linux's restore_altstack does).
  (void)SetAltstack(signals, uc.stack, cpu.regs.rsp);
  return {};
}

GuestStack AltstackAsSeen(const SignalState& signals, uint64_t sp) {
  const GuestStack& stack = signals.altstack;
  if (!AltstackEnabled(stack)) return GuestStack{};  // {0, SS_DISABLE, 0}
  GuestStack seen = stack;
  seen.flags = (OnAltstack(stack, sp) ? SS_ONSTACK : 0) | (stack.flags & kSsAutodisarm);
  return seen;
}

int SetAltstack(SignalState& signals, const GuestStack& stack, uint64_t sp) {
  if (OnAltstack(signals.altstack, sp)) return EPERM;
  const int32_t mode = stack.flags & ~kSsAutodisarm;
  if (mode != 0 && mode != SS_ONSTACK && mode != SS_DISABLE) return EINVAL;
  if (mode == SS_DISABLE) {
    signals.altstack = GuestStack{};
    return 0;
  }
  if (stack.size < kMinSigstksz) return ENOMEM;
  signals.altstack = GuestStack{
      .sp = stack.sp, .flags = stack.flags & kSsAutodisarm, .pad = 0, .size = stack.size};
  return 0;
}

GuestSiginfo SiginfoOf(int signal, const PendingSignalInfo& info) {
  GuestSiginfo out;
  out.signo = signal;
  out.code = info.code;
  if (info.code == kSiTimer) {  // the _timer member: si_tid, si_overrun, si_value
    out.word0 = static_cast<uint32_t>(info.timer_id) | uint64_t{static_cast<uint32_t>(info.overrun)}
                                                           << 32;
    out.rest[0] = info.value;
    return out;
  }
  // Faults (positive codes of the synchronous signals) carry an address; the others a sender.
  const bool fault = info.code > 0 && (kSynchronousSignals & SignalState::Bit(signal)) != 0;
  out.word0 = fault ? info.addr : static_cast<uint32_t>(info.pid) | (uint64_t{info.uid} << 32);
  return out;
}

bool OnAltstack(const GuestStack& s, uint64_t sp) {
  return AltstackEnabled(s) && sp > s.sp && sp - s.sp <= s.size;
}

}  // namespace flurry
