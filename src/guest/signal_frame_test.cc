#include "guest/signal_frame.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstring>

#include "guest/syscalls_test_support.h"

namespace flurry {
namespace {

constexpr uint64_t kHandler = 0x401000;
constexpr uint64_t kRestorer = 0x402000;
constexpr uint64_t kStackTop = 60ULL << 20;

struct SignalFrameTest : ::testing::Test {
  testing::SyscallHarness h;
  SignalState& signals = h.state.signals;
  x86::UserCpuState cpu;

  SignalFrameTest() {
    cpu.regs.rsp = kStackTop - 8;
    cpu.regs.rip = 0x400123;
    cpu.regs.rax = 7;
    cpu.regs.rcx = 0x1111;
    cpu.regs.r11 = 0x2222;
    cpu.regs.r15 = 0x1515;
    cpu.regs.rflags = 0x202 | 0x1 | 0x400;  // CF, DF
    cpu.xcr0 = 3;
    cpu.xsave.assign(576, 0);
    for (int i = 160; i < 288; ++i) cpu.xsave[i] = static_cast<uint8_t>(i);  // XMM registers
    const uint64_t xstate_bv = 3;  // x87 and SSE: what Linux's frames always mark
    std::memcpy(cpu.xsave.data() + 512, &xstate_bv, 8);
    signals.actions[SIGUSR1] = {.handler = kHandler,
                                .flags = SA_SIGINFO | kSaRestorer,
                                .restorer = kRestorer,
                                .mask = SignalState::Bit(SIGUSR2)};
  }

  GuestSiginfo Info(int signal) {
    GuestSiginfo info;
    info.signo = signal;
    info.code = -6;
    info.word0 = 42;
    return info;
  }
};

TEST_F(SignalFrameTest, HandlerEntryFollowsTheLinuxAbi) {
  ASSERT_TRUE(PushSignalFrame(h.memory, signals, Info(SIGUSR1), {}, cpu).has_value());
  EXPECT_EQ(cpu.regs.rip, kHandler);
  EXPECT_EQ(cpu.regs.rdi, static_cast<uint64_t>(SIGUSR1));
  EXPECT_EQ((cpu.regs.rsp + 8) % 16, 0u) << "as just after a call";
  EXPECT_LE(cpu.regs.rsp, kStackTop - 8 - 128) << "below the red zone";
  EXPECT_EQ(cpu.regs.rflags & 0x400, 0u) << "DF cleared";
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(cpu.regs.rsp).value(), kRestorer);
  const auto info = h.memory.ReadObject<GuestSiginfo>(cpu.regs.rsi).value();
  EXPECT_EQ(info.signo, SIGUSR1);
  EXPECT_EQ(info.code, -6);
  EXPECT_EQ(info.word0, 42u);
  const auto uc = h.memory.ReadObject<GuestUcontext>(cpu.regs.rdx).value();
  EXPECT_EQ(uc.mcontext.rip, 0x400123u);
  EXPECT_EQ(uc.mcontext.rax, 7u);
  EXPECT_EQ(uc.mcontext.fpstate % 64, 0u);
  EXPECT_EQ(uc.sigmask, 0u);
  EXPECT_EQ(uc.stack.flags, SS_DISABLE);
  // The handler runs with its mask and its own signal blocked, the FPU reset.
  EXPECT_EQ(signals.blocked, SignalState::Bit(SIGUSR1) | SignalState::Bit(SIGUSR2));
  EXPECT_EQ(cpu.xsave[160], 0);
}

TEST_F(SignalFrameTest, SigreturnRestoresEverythingTheHandlerInterrupted) {
  const x86::UserCpuState before = cpu;
  ASSERT_TRUE(PushSignalFrame(h.memory, signals, Info(SIGUSR1), {}, cpu).has_value());
  // The handler clobbers registers and returns: `ret` pops the restorer's address.
  cpu.regs.rbx = cpu.regs.r15 = cpu.regs.rcx = 0xdead;
  cpu.regs.rsp += 8;
  ASSERT_TRUE(PopSignalFrame(h.memory, signals, cpu).has_value());
  EXPECT_EQ(cpu.regs, before.regs);
  EXPECT_EQ(cpu.xsave, before.xsave);
  EXPECT_EQ(signals.blocked, 0u);
}

TEST_F(SignalFrameTest, AHandlerMayChangeTheContextItReturnsTo) {
  ASSERT_TRUE(PushSignalFrame(h.memory, signals, Info(SIGUSR1), {}, cpu).has_value());
  GuestUcontext uc = h.memory.ReadObject<GuestUcontext>(cpu.regs.rdx).value();
  uc.mcontext.rip = 0x400200;
  uc.mcontext.eflags |= 0x3000;  // IOPL 3: not a program's to set
  uc.sigmask = SignalState::Bit(SIGINT) | SignalState::Bit(SIGKILL);
  ASSERT_TRUE(h.memory.WriteObject(cpu.regs.rdx, uc).has_value());
  cpu.regs.rsp += 8;
  ASSERT_TRUE(PopSignalFrame(h.memory, signals, cpu).has_value());
  EXPECT_EQ(cpu.regs.rip, 0x400200u);
  EXPECT_EQ(cpu.regs.rflags & 0x3000, 0u);
  EXPECT_EQ(signals.blocked, SignalState::Bit(SIGINT)) << "SIGKILL is never blocked";
}

TEST_F(SignalFrameTest, ADamagedFpuImageIsRepairedNotLoaded) {
  ASSERT_TRUE(PushSignalFrame(h.memory, signals, Info(SIGUSR1), {}, cpu).has_value());
  const auto uc = h.memory.ReadObject<GuestUcontext>(cpu.regs.rdx).value();
  const uint64_t bad_bv = ~0ULL;
  const uint32_t bad_mxcsr = 0xffffffff;
  ASSERT_TRUE(h.memory.WriteObject(uc.mcontext.fpstate + 512, bad_bv).has_value());
  ASSERT_TRUE(h.memory.WriteObject(uc.mcontext.fpstate + 520, bad_bv).has_value());  // XCOMP_BV
  ASSERT_TRUE(h.memory.WriteObject(uc.mcontext.fpstate + 24, bad_mxcsr).has_value());
  cpu.regs.rsp += 8;
  ASSERT_TRUE(PopSignalFrame(h.memory, signals, cpu).has_value());
  uint64_t bv = 0, comp = 0;
  uint32_t mxcsr = 0;
  std::memcpy(&bv, cpu.xsave.data() + 512, 8);
  std::memcpy(&comp, cpu.xsave.data() + 520, 8);
  std::memcpy(&mxcsr, cpu.xsave.data() + 24, 4);
  EXPECT_EQ(bv, 3u) << "only components XCR0 enables";
  EXPECT_EQ(comp, 0u);
  EXPECT_EQ(mxcsr, 0xffffu);
  for (int i = 464; i < 512; ++i) ASSERT_EQ(cpu.xsave[i], 0) << i;
}

TEST_F(SignalFrameTest, AFrameOffTheStackFailsAndLeavesTheCpuAlone) {
  cpu.regs.rsp = 0x1000;  // below user memory
  const x86::UserCpuState before = cpu;
  EXPECT_FALSE(PushSignalFrame(h.memory, signals, Info(SIGUSR1), {}, cpu).has_value());
  EXPECT_FALSE(PopSignalFrame(h.memory, signals, cpu).has_value());
  EXPECT_EQ(cpu.regs, before.regs);
}

TEST_F(SignalFrameTest, NoRestorerIsRefused) {
  signals.actions[SIGUSR1].flags &= ~static_cast<uint64_t>(kSaRestorer);
  EXPECT_FALSE(PushSignalFrame(h.memory, signals, Info(SIGUSR1), {}, cpu).has_value());
}

TEST_F(SignalFrameTest, OnstackHandlersRunOnTheAlternateStack) {
  const uint64_t alt = 20ULL << 20;
  signals.altstack = GuestStack{.sp = alt, .flags = 0, .pad = 0, .size = 64 * 1024};
  signals.actions[SIGUSR1].flags |= SA_ONSTACK | SA_NODEFER | SA_RESETHAND;
  ASSERT_TRUE(PushSignalFrame(h.memory, signals, Info(SIGUSR1), {}, cpu).has_value());
  EXPECT_GT(cpu.regs.rsp, alt);
  EXPECT_LT(cpu.regs.rsp, alt + 64 * 1024);
  EXPECT_EQ(signals.blocked, SignalState::Bit(SIGUSR2)) << "SA_NODEFER";
  EXPECT_EQ(signals.actions[SIGUSR1].handler, reinterpret_cast<uint64_t>(SIG_DFL))
      << "SA_RESETHAND";
  // A second signal on the alternate stack nests below the first frame.
  const uint64_t first = cpu.regs.rsp;
  signals.actions[SIGUSR2] = signals.actions[SIGUSR1];
  signals.actions[SIGUSR2].handler = kHandler;
  ASSERT_TRUE(PushSignalFrame(h.memory, signals, Info(SIGUSR2), {}, cpu).has_value());
  EXPECT_LT(cpu.regs.rsp, first);
  const auto uc = h.memory.ReadObject<GuestUcontext>(cpu.regs.rdx).value();
  EXPECT_EQ(uc.stack.sp, alt) << "the stack as stored (Linux's __save_altstack)";
  EXPECT_EQ(uc.stack.flags, 0);
}

TEST_F(SignalFrameTest, AFrameThatOverflowsTheAlternateStackFails) {
  const uint64_t alt = 20ULL << 20;
  signals.altstack = GuestStack{.sp = alt, .flags = 0, .pad = 0, .size = 1024};  // < one frame
  signals.actions[SIGUSR1].flags |= SA_ONSTACK;
  const x86::UserCpuState before = cpu;
  EXPECT_FALSE(PushSignalFrame(h.memory, signals, Info(SIGUSR1), {}, cpu).has_value());
  EXPECT_EQ(cpu.regs, before.regs);
}

TEST_F(SignalFrameTest, AutodisarmFreesTheStackForTheHandlerAndSigreturnRestoresIt) {
  const uint64_t alt = 20ULL << 20;
  const GuestStack stack{.sp = alt, .flags = kSsAutodisarm, .pad = 0, .size = 64 * 1024};
  signals.altstack = stack;
  signals.actions[SIGUSR1].flags |= SA_ONSTACK;
  ASSERT_TRUE(PushSignalFrame(h.memory, signals, Info(SIGUSR1), {}, cpu).has_value());
  EXPECT_EQ(signals.altstack.flags, SS_DISABLE);
  cpu.regs.rsp += 8;
  ASSERT_TRUE(PopSignalFrame(h.memory, signals, cpu).has_value());
  EXPECT_EQ(signals.altstack.sp, stack.sp);
  EXPECT_EQ(signals.altstack.size, stack.size);
  EXPECT_EQ(signals.altstack.flags, kSsAutodisarm);
}

TEST_F(SignalFrameTest, SigaltstackReportsAndRefusesAsLinux) {
  GuestStack seen = AltstackAsSeen(signals, kStackTop);
  EXPECT_EQ(seen.flags, SS_DISABLE);
  EXPECT_EQ(seen.size, 0u);
  EXPECT_EQ(SetAltstack(signals, {.sp = 0x1000, .flags = 0, .pad = 0, .size = 2047}, kStackTop),
            ENOMEM);
  EXPECT_EQ(SetAltstack(signals, {.sp = 0x1000, .flags = 4, .pad = 0, .size = 4096}, kStackTop),
            EINVAL);
  EXPECT_EQ(
      SetAltstack(signals, {.sp = 0x1000, .flags = SS_ONSTACK, .pad = 0, .size = 2048}, kStackTop),
      0);
  EXPECT_EQ(AltstackAsSeen(signals, 0x1400).flags, SS_ONSTACK);
  EXPECT_EQ(SetAltstack(signals, {.sp = 0, .flags = SS_DISABLE, .pad = 0, .size = 0}, 0x1400),
            EPERM)
      << "not while running on it";
}

TEST_F(SignalFrameTest, AnFxsaveOnlyContextRestoresTheLegacyAreaOnly) {
  ASSERT_TRUE(PushSignalFrame(h.memory, signals, Info(SIGUSR1), {}, cpu).has_value());
  GuestUcontext uc = h.memory.ReadObject<GuestUcontext>(cpu.regs.rdx).value();
  uc.flags &= ~uint64_t{1};  // no UC_FP_XSTATE: only the 512-byte FXSAVE area is valid
  ASSERT_TRUE(h.memory.WriteObject(cpu.regs.rdx, uc).has_value());
  const uint8_t junk[64] = {0xff, 0xff, 0xff, 0xff};
  ASSERT_TRUE(h.memory.Write(uc.mcontext.fpstate + 512, junk, sizeof junk).has_value());
  cpu.regs.rsp += 8;
  ASSERT_TRUE(PopSignalFrame(h.memory, signals, cpu).has_value());
  EXPECT_EQ(cpu.xsave[160], 160) << "XMM registers from the legacy area";
  EXPECT_EQ(cpu.xsave[512], 3) << "XSTATE_BV: x87 and SSE, nothing from past the legacy area";
}

TEST_F(SignalFrameTest, SynchronousSignalsComeFirst) {
  signals.pending = SignalState::Bit(SIGINT) | SignalState::Bit(SIGSEGV) | SignalState::Bit(SIGHUP);
  EXPECT_EQ(NextDeliverableSignal(signals), SIGSEGV);
  signals.blocked = SignalState::Bit(SIGSEGV);
  EXPECT_EQ(NextDeliverableSignal(signals), SIGHUP);
  signals.blocked = ~0ULL;
  EXPECT_EQ(NextDeliverableSignal(signals), 0);
  // Inside rt_sigsuspend its mask is the one that counts.
  signals.suspended = true;
  signals.suspend_mask = ~SignalState::Bit(SIGINT);
  EXPECT_EQ(NextDeliverableSignal(signals), SIGINT);
}

}  // namespace
}  // namespace flurry
