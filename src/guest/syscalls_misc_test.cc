// Tests for the time, process and signal syscalls and the dispatcher.
#include <asm/prctl.h>
#include <gtest/gtest.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sysinfo.h>
#include <sys/utsname.h>

#include <atomic>
#include <chrono>
#include <csignal>
#include <ctime>
#include <thread>

#include "guest/syscalls_test_support.h"

namespace flurry {
namespace {

using testing::SyscallHarness;
constexpr uint64_t kBuf = SyscallHarness::kScratch;

TEST(Dispatch, UnknownSyscallIsEnosys) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(425), -ENOSYS);  // io_uring_setup
  EXPECT_EQ(h.Call(999), -ENOSYS);
  EXPECT_EQ(h.Call(~0ULL), -ENOSYS);
}

TEST(SysExit, ExitsWithLowByte) {
  SyscallHarness h;
  h.Call(SYS_exit_group, 0x1234);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kExit);
  EXPECT_EQ(h.last.value, 0x34);
}

TEST(SysClockGettime, WritesTimeAndChecksArguments) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_clock_gettime, CLOCK_MONOTONIC, kBuf), 0);
  timespec first = h.memory.ReadObject<timespec>(kBuf).value();
  EXPECT_EQ(h.Call(SYS_clock_gettime, CLOCK_MONOTONIC, kBuf), 0);
  timespec second = h.memory.ReadObject<timespec>(kBuf).value();
  EXPECT_TRUE(second.tv_sec > first.tv_sec ||
              (second.tv_sec == first.tv_sec && second.tv_nsec >= first.tv_nsec));
  EXPECT_EQ(h.Call(SYS_clock_gettime, 12345, kBuf), -EINVAL);
  EXPECT_EQ(h.Call(SYS_clock_gettime, CLOCK_REALTIME, 0), -EFAULT);
  EXPECT_EQ(h.Call(SYS_clock_gettime, CLOCK_REALTIME, SyscallHarness::kRam - 4), -EFAULT);
}

TEST(SysNanosleep, SleepsAndValidates) {
  SyscallHarness h;
  timespec ts{0, 1'000'000};
  ASSERT_TRUE(h.memory.WriteObject(kBuf, ts).has_value());
  EXPECT_EQ(h.Call(SYS_nanosleep, kBuf, 0), 0);
  timespec bad{0, 2'000'000'000};
  ASSERT_TRUE(h.memory.WriteObject(kBuf, bad).has_value());
  EXPECT_EQ(h.Call(SYS_nanosleep, kBuf, 0), -EINVAL);
  EXPECT_EQ(h.Call(SYS_nanosleep, 0x100, 0), -EFAULT);
}

// A sleep that control requests interrupt without pause ends when it was due: the time the VMM
// spends serving them is not added to it. (A client asking the API without pause once kept a
// ticking guest asleep for over a minute.) Old behaviour: each 20 ms of serving after at most
// 2 ms asleep, so 300 ms of sleep took over 3 s; the bound allows a second for a slow host.
TEST(SysNanosleep, InterruptionsServedMeanwhileDoNotLengthenIt) {
  struct sigaction quiet {};
  quiet.sa_handler = [](int) {};  // no SA_RESTART: the host sleep returns EINTR
  struct sigaction old {};
  ASSERT_EQ(sigaction(SIGUSR2, &quiet, &old), 0);
  SyscallHarness h;
  const timespec request{0, 300'000'000};
  ASSERT_TRUE(h.memory.WriteObject(kBuf, request).has_value());
  std::atomic<bool> done{false};
  const pthread_t sleeper = pthread_self();
  std::thread kicker([&] {
    while (!done.load()) {
      pthread_kill(sleeper, SIGUSR2);
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
  });
  int served = 0;
  SyscallContext context{h.memory, h.state};
  context.serve_interrupt_arg = &served;
  context.serve_interrupt = [](void* arg) {
    ++*static_cast<int*>(arg);
    const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(20);
    while (std::chrono::steady_clock::now() < until) {
    }
    return true;
  };
  const auto start = std::chrono::steady_clock::now();
  const SyscallResult r = h.table.Dispatch(context, SyscallArgs{SYS_nanosleep, {kBuf, 0}});
  const auto took = std::chrono::steady_clock::now() - start;
  done.store(true);
  kicker.join();
  sigaction(SIGUSR2, &old, nullptr);
  EXPECT_EQ(r.value, 0);
  EXPECT_GT(served, 1);  // it was interrupted, and served
  EXPECT_GE(took, std::chrono::milliseconds(300));
  EXPECT_LT(took, std::chrono::milliseconds(1300)) << served << " interruptions served";
}

int64_t Ns(const timespec& ts) { return ts.tv_sec * 1'000'000'000LL + ts.tv_nsec; }
int64_t HostNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return Ns(ts);
}

// The monotonic-domain clocks read the host's plus the guest's offset; the wall clocks do not.
TEST(SysClockGettime, MonotonicClocksCarryTheGuestOffset) {
  constexpr int64_t kOffset = 1'000'000 * 1'000'000'000LL;  // about 11.6 days ahead
  constexpr int64_t kSlack = 2'000'000'000LL;               // generous: slow hosts
  SyscallHarness h;
  h.state.monotonic_offset_ns = kOffset;
  for (clockid_t clock : {CLOCK_MONOTONIC, CLOCK_MONOTONIC_RAW, CLOCK_MONOTONIC_COARSE,
                          CLOCK_BOOTTIME, CLOCK_REALTIME, CLOCK_TAI}) {
    const bool offset = clock != CLOCK_REALTIME && clock != CLOCK_TAI;
    const int64_t before = HostNs(clock);
    ASSERT_EQ(h.Call(SYS_clock_gettime, clock, kBuf), 0);
    const int64_t after = HostNs(clock);
    const int64_t guest = Ns(h.memory.ReadObject<timespec>(kBuf).value());
    const int64_t expected = offset ? kOffset : 0;
    EXPECT_GE(guest - expected, before - kSlack) << "clock " << clock;
    EXPECT_LE(guest - expected, after + kSlack) << "clock " << clock;
  }
}

// An absolute deadline on CLOCK_MONOTONIC is guest time. With the guest's clock behind the
// host's, a deadline 100 ms ahead in guest time is long past in host time: unconverted, the
// sleep would return at once.
TEST(SysClockNanosleep, AbsoluteDeadlinesAreGuestTime) {
  SyscallHarness h;
  h.state.monotonic_offset_ns = -HostNs(CLOCK_MONOTONIC) / 2;
  ASSERT_EQ(h.Call(SYS_clock_gettime, CLOCK_MONOTONIC, kBuf), 0);
  const int64_t guest_now = Ns(h.memory.ReadObject<timespec>(kBuf).value());
  const timespec deadline{.tv_sec = (guest_now + 100'000'000) / 1'000'000'000,
                          .tv_nsec = (guest_now + 100'000'000) % 1'000'000'000};
  ASSERT_TRUE(h.memory.WriteObject(kBuf, deadline).has_value());
  const int64_t start = HostNs(CLOCK_MONOTONIC);
  EXPECT_EQ(h.Call(SYS_clock_nanosleep, CLOCK_MONOTONIC, TIMER_ABSTIME, kBuf, 0), 0);
  EXPECT_GE(HostNs(CLOCK_MONOTONIC) - start, 90'000'000);
  // The same deadline on a futex wait (FUTEX_WAIT_BITSET: absolute, CLOCK_MONOTONIC).
  ASSERT_EQ(h.Call(SYS_clock_gettime, CLOCK_MONOTONIC, kBuf), 0);
  const int64_t later = Ns(h.memory.ReadObject<timespec>(kBuf).value()) + 100'000'000;
  const timespec futex_deadline{.tv_sec = later / 1'000'000'000, .tv_nsec = later % 1'000'000'000};
  ASSERT_TRUE(h.memory.WriteObject(kBuf, futex_deadline).has_value());
  ASSERT_TRUE(h.memory.WriteObject<uint32_t>(kBuf + 64, 5).has_value());
  // The wait parks the thread until that guest deadline (the VMM sleeps for it).
  h.Call(SYS_futex, kBuf + 64, FUTEX_WAIT_BITSET_PRIVATE, 5, kBuf, 0, FUTEX_BITSET_MATCH_ANY);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kBlock);
  ASSERT_TRUE(h.state.threads.block.has_value());
  EXPECT_EQ(h.state.threads.block->deadline_ns, later);
  EXPECT_EQ(h.state.threads.block->expiry_result, -ETIMEDOUT);
}

// Uptime is guest time since the guest's start time.
TEST(SysResources, UptimeIsGuestTime) {
  constexpr int64_t kOffset = 1'000'000 * 1'000'000'000LL;
  SyscallHarness h;
  h.state.monotonic_offset_ns = kOffset;
  h.state.start_time_ns = static_cast<uint64_t>(HostNs(CLOCK_MONOTONIC) + kOffset) -
                          100 * 1'000'000'000ULL;  // started 100 s ago
  ASSERT_EQ(h.Call(SYS_sysinfo, kBuf), 0);
  const long uptime = h.memory.ReadObject<struct sysinfo>(kBuf).value().uptime;
  EXPECT_GE(uptime, 100);
  EXPECT_LE(uptime, 110);
  // A start time ahead of the guest's clock (an old descriptor from another host): 0, not a
  // huge number.
  h.state.start_time_ns = static_cast<uint64_t>(HostNs(CLOCK_MONOTONIC) + 2 * kOffset);
  ASSERT_EQ(h.Call(SYS_sysinfo, kBuf), 0);
  EXPECT_EQ(h.memory.ReadObject<struct sysinfo>(kBuf).value().uptime, 0);
}

TEST(SysArchPrctl, RecordsTheTlsBase) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_arch_prctl, ARCH_SET_FS, 0x7000000), 0);
  EXPECT_TRUE(h.state.segment_bases.dirty);
  EXPECT_EQ(h.state.segment_bases.fs_base, 0x7000000u);
  EXPECT_EQ(h.Call(SYS_arch_prctl, ARCH_GET_FS, kBuf), 0);
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(kBuf).value(), 0x7000000u);
  EXPECT_EQ(h.Call(SYS_arch_prctl, ARCH_SET_FS, 1ULL << 60), -EPERM);
  EXPECT_EQ(h.Call(SYS_arch_prctl, 0x9999, 0), -EINVAL);
}

TEST(SysIdentity, PidsAndUname) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_getpid), 42);
  EXPECT_EQ(h.Call(SYS_gettid), 42);
  EXPECT_EQ(h.Call(SYS_set_tid_address, kBuf), 42);
  EXPECT_EQ(h.Call(SYS_uname, kBuf), 0);
  utsname u = h.memory.ReadObject<utsname>(kBuf).value();
  EXPECT_STREQ(u.sysname, "Linux");
  EXPECT_STREQ(u.machine, "x86_64");
  EXPECT_EQ(h.Call(SYS_uname, 8), -EFAULT);
}

TEST(SysResources, SysinfoRlimitAffinity) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_sysinfo, kBuf), 0);
  struct sysinfo info = h.memory.ReadObject<struct sysinfo>(kBuf).value();
  EXPECT_EQ(info.totalram, SyscallHarness::kRam);
  EXPECT_EQ(info.mem_unit, 1u);
  EXPECT_EQ(h.Call(SYS_prlimit64, 0, RLIMIT_STACK, 0, kBuf), 0);
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(kBuf).value(), 8u << 20);
  EXPECT_EQ(h.Call(SYS_prlimit64, 0, 999, 0, kBuf), -EINVAL);
  EXPECT_EQ(h.Call(SYS_prlimit64, 7, RLIMIT_STACK, 0, kBuf), -ESRCH);
  EXPECT_EQ(h.Call(SYS_sched_getaffinity, 0, 128, kBuf), 8);
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(kBuf).value(), 1u);
  EXPECT_EQ(h.Call(SYS_sched_getaffinity, 0, 4, kBuf), -EINVAL);
}

TEST(SysGetrandom, FillsAndDiffers) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_getrandom, kBuf, 32, 0), 32);
  EXPECT_EQ(h.Call(SYS_getrandom, kBuf + 32, 32, 0), 32);
  auto a = h.memory.ReadObject<std::array<uint64_t, 4>>(kBuf).value();
  auto b = h.memory.ReadObject<std::array<uint64_t, 4>>(kBuf + 32).value();
  EXPECT_NE(a, b);
  EXPECT_EQ(h.Call(SYS_getrandom, 0, 32, 0), -EFAULT);
  EXPECT_EQ(h.Call(SYS_getrandom, kBuf, 32, 0x100), -EINVAL);
}

TEST(SysFutex, SingleThreadSemantics) {
  SyscallHarness h;
  ASSERT_TRUE(h.memory.WriteObject<uint32_t>(kBuf, 5).has_value());
  EXPECT_EQ(h.Call(SYS_futex, kBuf, FUTEX_WAKE_PRIVATE, 1), 0);
  EXPECT_EQ(h.Call(SYS_futex, kBuf, FUTEX_WAIT_PRIVATE, 4, 0), -EAGAIN);
  // A lone thread's wait parks it too: a signal handler could wake it, as on Linux.
  h.Call(SYS_futex, kBuf, FUTEX_WAIT_PRIVATE, 5, 0);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kBlock);
  EXPECT_EQ(h.Call(SYS_futex, kBuf + 1, FUTEX_WAKE, 1), -EINVAL);
}

TEST(SysSignals, DispositionsAreRecorded) {
  SyscallHarness h;
  GuestSigaction act{0x401000, 0x04000000, 0x402000, 1ULL << (SIGKILL - 1)};
  ASSERT_TRUE(h.memory.WriteObject(kBuf, act).has_value());
  EXPECT_EQ(h.Call(SYS_rt_sigaction, SIGINT, kBuf, 0, 8), 0);
  EXPECT_EQ(h.Call(SYS_rt_sigaction, SIGINT, 0, kBuf + 64, 8), 0);
  GuestSigaction old = h.memory.ReadObject<GuestSigaction>(kBuf + 64).value();
  EXPECT_EQ(old.handler, 0x401000u);
  EXPECT_EQ(old.mask, 0u);  // SIGKILL cannot be blocked
  EXPECT_EQ(h.Call(SYS_rt_sigaction, SIGKILL, kBuf, 0, 8), -EINVAL);
  EXPECT_EQ(h.Call(SYS_rt_sigaction, SIGINT, kBuf, 0, 4), -EINVAL);
  EXPECT_EQ(h.Call(SYS_rt_sigaction, 65, kBuf, 0, 8), -EINVAL);
  ASSERT_TRUE(h.memory.WriteObject<uint64_t>(kBuf, 0x3).has_value());
  EXPECT_EQ(h.Call(SYS_rt_sigprocmask, SIG_BLOCK, kBuf, 0, 8), 0);
  EXPECT_EQ(h.state.signals.blocked, 3u);
  EXPECT_EQ(h.Call(SYS_rt_sigprocmask, 7, kBuf, 0, 8), -EINVAL);
}

TEST(SysSignals, SignalsToSelfBecomePendingUnlessIgnored) {
  SyscallHarness h;
  EXPECT_EQ(h.Call(SYS_tgkill, 42, 42, SIGABRT), 0);  // for this thread alone
  EXPECT_EQ(h.state.signals.thread_pending, SignalState::Bit(SIGABRT));
  EXPECT_EQ(h.state.signals.pending, 0u);
  EXPECT_EQ(h.state.signals.pending_info[SIGABRT].code, -6);  // SI_TKILL
  EXPECT_EQ(h.state.signals.pending_info[SIGABRT].pid, 42);
  EXPECT_EQ(h.Call(SYS_kill, 42, 0), 0);
  EXPECT_EQ(h.Call(SYS_kill, 43, SIGTERM), -ESRCH);
  EXPECT_EQ(h.Call(SYS_kill, 42, SIGCHLD), 0);  // ignored by default: not pending
  EXPECT_EQ(h.state.signals.pending, 0u);
  EXPECT_EQ(h.Call(SYS_kill, 42, SIGABRT), 0);  // for the process
  EXPECT_EQ(h.state.signals.pending, SignalState::Bit(SIGABRT));
  // Blocked, it shows in rt_sigpending; set to SIG_IGN, it is dropped.
  h.state.signals.blocked = SignalState::Bit(SIGABRT);
  constexpr uint64_t kSet = SyscallHarness::kScratch;
  EXPECT_EQ(h.Call(SYS_rt_sigpending, kSet, 8), 0);
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(kSet).value(), SignalState::Bit(SIGABRT));
  GuestSigaction ignore{.handler = reinterpret_cast<uint64_t>(SIG_IGN)};
  ASSERT_TRUE(h.memory.WriteObject(kSet, ignore).has_value());
  EXPECT_EQ(h.Call(SYS_rt_sigaction, SIGABRT, kSet, 0, 8), 0);
  EXPECT_EQ(h.state.signals.pending, 0u);
  EXPECT_EQ(h.state.signals.thread_pending, 0u);
}

TEST(SysPrctl, NameIsKeptAndOtherOptionsAreAnsweredOrRefused) {
  SyscallHarness h;
  h.state.identity.exe_path = "/bin/busybox";
  constexpr uint64_t kBuf = SyscallHarness::kScratch;
  EXPECT_EQ(h.Call(SYS_prctl, PR_GET_NAME, kBuf), 0);
  char name[16] = {};
  ASSERT_TRUE(h.memory.Read(kBuf, name, sizeof name).has_value());
  EXPECT_STREQ(name, "busybox");
  ASSERT_TRUE(h.memory.Write(kBuf + 64, "a-rather-long-thread-name", 26).has_value());
  EXPECT_EQ(h.Call(SYS_prctl, PR_SET_NAME, kBuf + 64), 0);
  EXPECT_EQ(h.Call(SYS_prctl, PR_GET_NAME, kBuf), 0);
  ASSERT_TRUE(h.memory.Read(kBuf, name, sizeof name).has_value());
  EXPECT_STREQ(name, "a-rather-long-t");  // 15 bytes and a NUL
  EXPECT_EQ(h.Call(SYS_prctl, PR_SET_PDEATHSIG, SIGKILL), 0);
  EXPECT_EQ(h.Call(SYS_prctl, PR_GET_DUMPABLE), 1);
  EXPECT_EQ(h.Call(SYS_prctl, PR_SET_DUMPABLE, 7), -EINVAL);
  EXPECT_EQ(h.Call(SYS_prctl, 0x7777), -EINVAL);
}

}  // namespace
}  // namespace flurry
