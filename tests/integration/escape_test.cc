// Escape attempts: a hostile guest (tests/guest/escape.c) tries to reach the host — host files,
// exec, the network, ptrace, signals to host processes, the seccomp stub's own pages and
// syscall instruction, the page the stub shares with the VMM, 32-bit syscalls. Every attempt
// must be refused; flurry must report what happened, end within its deadline and leave no
// process behind.
//
// Runs once per backend ($FLURRY_BACKEND). Attempts that target the seccomp stub need its
// addresses, read from the stub's ELF (FLURRY_STUB_ELF); under KVM nothing is mapped there, so
// the same attempt is a plain guest fault, which is asserted where it applies.
#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "harness.h"
#include "process_watch.h"

namespace {

using namespace flurry_test;

constexpr uint64_t kStubText = 0x7e0000000000ULL;

std::string BackendUnderTest() {
  const char* backend = std::getenv("FLURRY_BACKEND");
  return backend != nullptr ? backend : "";
}
bool Seccomp() { return BackendUnderTest() == "seccomp"; }

std::string Hex(uint64_t v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t StubSymbol(const char* name) {
  const uint64_t addr = ElfSymbol(FLURRY_STUB_ELF, name);
  EXPECT_NE(addr, 0u) << name << " not found in " << FLURRY_STUB_ELF;
  return addr;
}

// A run of the escape guest, watched: every process it started must be gone afterwards.
struct Watched {
  RunResult run;
  std::vector<std::string> leftovers;
};

Watched RunEscape(std::vector<std::string> args, RunOptions options = WithDeadline(60)) {
  ProcessWatch watch;
  args.insert(args.begin(), Guest("escape"));
  args.insert(args.begin(), "run");
  Watched w;
  w.run = Flurry(args, options);
  w.leftovers = watch.Leftovers();
  return w;
}

// The common post-conditions: flurry ended by itself (no hang, no crash of the VMM) and left
// nothing running.
void ExpectEndedCleanly(const Watched& w) {
  EXPECT_FALSE(w.run.timed_out) << w.run.Describe();
  EXPECT_TRUE(w.run.exited) << "the VMM itself died of a signal" << w.run.Describe();
  EXPECT_TRUE(w.leftovers.empty())
      << "processes left behind: " << ::testing::PrintToString(w.leftovers) << w.run.Describe();
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

// The stub died at its seccomp filter: flurry says so and fails, never hanging. (The VMM
// ignores SIGCHLD, so the stub is reaped at once and flurry cannot always name the signal.)
void ExpectStubKilledBySeccomp(const Watched& w) {
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 1) << w.run.Describe();
  EXPECT_TRUE(StartsWith(w.run.err, "flurry: running the guest: the guest's stub process died: "))
      << w.run.Describe();
  EXPECT_TRUE(Contains(w.run.err, "killed by SIGSYS") || Contains(w.run.err, "it is gone"))
      << w.run.Describe();
}

// A process to aim signals at; killed (and reaped) on destruction.
class Victim {
 public:
  Victim() {
    pid_ = fork();
    if (pid_ == 0) {
      for (;;) pause();
    }
  }
  ~Victim() {
    kill(pid_, SIGKILL);
    waitpid(pid_, nullptr, 0);
  }
  pid_t pid() const { return pid_; }
  bool Alive() const { return waitpid(pid_, nullptr, WNOHANG) == 0; }

 private:
  pid_t pid_;
};

// ---- host files -------------------------------------------------------------------------------

// The first line of the host's /etc/passwd: must never show up in the guest's output. Empty
// where the host has none (the minimal system kvm_in_qemu.sh boots): the exact outputs below
// still prove the guest got ENOENT from its own confined file system.
std::string HostPasswdLine() {
  std::string text = ReadFile("/etc/passwd");
  return text.substr(0, text.find('\n'));
}

// Whether `out` leaks the host's /etc/passwd.
bool LeaksHostPasswd(const std::string& out) {
  const std::string line = HostPasswdLine();
  return !line.empty() && Contains(out, line);
}

TEST(Escape, OpenHostFileWithoutDir) {
  Watched w = RunEscape({"open", "/etc/passwd", "/proc/self/root/etc/passwd", "../etc/passwd"});
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 0) << w.run.Describe();
  EXPECT_EQ(w.run.out,
            "path=/etc/passwd\nopen=-2\n"
            "path=/proc/self/root/etc/passwd\nopen=-2\n"
            "path=../etc/passwd\nopen=-2\n")
      << w.run.Describe();
  EXPECT_FALSE(LeaksHostPasswd(w.run.out));
}

TEST(Escape, OpenHostFileThroughDirEscapes) {
  TempDir dir;
  fs::create_directories(dir.path() / "etc");
  WriteFile(dir.path() / "etc" / "passwd", "fake-passwd");
  fs::create_symlink("/etc/passwd", dir.path() / "abs");
  fs::create_symlink("../../../../../../../etc/passwd", dir.path() / "rel");
  fs::create_symlink("/", dir.path() / "hostroot");
  const std::vector<std::string> paths = {
      "/etc/passwd", "/../../../../etc/passwd", "/abs",
      "/rel",        "/hostroot/etc/passwd",    "/proc/self/root/etc/passwd"};
  std::vector<std::string> args = {"--dir", dir.path().string(), Guest("escape"), "open"};
  args.insert(args.end(), paths.begin(), paths.end());
  ProcessWatch watch;
  args.insert(args.begin(), "run");
  Watched w{Flurry(args, WithDeadline(60)), {}};
  w.leftovers = watch.Leftovers();
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 0) << w.run.Describe();
  // Every path that leads out of the directory is resolved inside it: the fake file, or
  // nothing (/proc is not there).
  std::string expected;
  int fd = 3;  // the guest never closes: each open gets the next fd
  for (const std::string& path : paths) {
    expected += "path=" + path + "\n";
    if (path == "/proc/self/root/etc/passwd") {
      expected += "open=-2\n";
    } else {
      expected += "open=" + std::to_string(fd++) + "\nread=11\ndata:fake-passwd\n";
    }
  }
  EXPECT_EQ(w.run.out, expected) << w.run.Describe();
  EXPECT_FALSE(LeaksHostPasswd(w.run.out));
}

// ---- exec, network, ptrace, signals ---------------------------------------------------------

TEST(Escape, ExecveOfAShellIsRefused) {
  Watched w = RunEscape({"execve"});
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 0) << w.run.Describe();
  // execve runs only programs inside --dir: without one, the host's /bin/sh is not there.
  EXPECT_EQ(w.run.out, "execve=-2\nexecveat=-2\n") << w.run.Describe();
  EXPECT_FALSE(Contains(w.run.out + w.run.err, "PWNED"));
}

TEST(Escape, SocketConnectToLoopbackIsRefused) {
  const int listener = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof sa), 0);
  ASSERT_EQ(listen(listener, 16), 0);
  socklen_t len = sizeof sa;
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  const int port = ntohs(sa.sin_port);

  Watched w = RunEscape({"socket", std::to_string(port)});
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 0) << w.run.Describe();
  EXPECT_EQ(w.run.out, "socket=-38\nconnect=-38\n") << w.run.Describe();
  // Nobody knocked.
  EXPECT_LT(accept(listener, nullptr, nullptr), 0);
  EXPECT_EQ(errno, EAGAIN);
  close(listener);
}

TEST(Escape, PtraceIsRefused) {
  Watched w = RunEscape({"ptrace"});
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 0) << w.run.Describe();
  EXPECT_EQ(w.run.out, "traceme=-38\nattach_parent=-38\nseize_parent=-38\n") << w.run.Describe();
}

// The guest's getpid() is the VMM's host pid and getppid() this test's: signals must still
// reach nothing on the host, and a signal to itself ends the guest, reported normally.
TEST(Escape, KillReachesNoHostProcess) {
  Victim victim;
  Watched w = RunEscape({"kill", std::to_string(victim.pid())});
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 128 + SIGKILL) << w.run.Describe();
  EXPECT_EQ(w.run.out, "kill_victim=-3\ntgkill_victim=-3\nprobe_parent=-3\nkill_pgrp=-3\n")
      << w.run.Describe();
  EXPECT_TRUE(Contains(w.run.err, "guest killed by SIGKILL it raised itself")) << w.run.Describe();
  EXPECT_TRUE(victim.Alive());
}

// ---- the stub's pages -------------------------------------------------------------------------

// mmap/mprotect/munmap/madvise of the stub's text and shared page: outside guest RAM, refused by
// the VMM's memory layer on either backend, and the guest goes on being served.
TEST(Escape, MmapOverTheStubIsRefused) {
  Watched w = RunEscape({"mmap_stub"});
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 0) << w.run.Describe();
  std::string expected;
  for (const char* name : {"text", "text1", "shared"}) {
    const std::string n = name;
    expected += "mmap_fixed_" + n + "=-12\nmmap_noreplace_" + n + "=-12\nmprotect_" + n +
                "=-12\nmunmap_" + n + "=0\nmadvise_" + n + "=-12\n";
  }
  EXPECT_EQ(w.run.out, expected + "alive\n") << w.run.Describe();
}

// The stub's code is read-only (seccomp) or not mapped at all (KVM): a write faults.
TEST(Escape, WriteToStubTextFaults) {
  const uint64_t target = Seccomp() ? StubSymbol("flurry_stub_syscall_insn") : kStubText + 0x1000;
  Watched w = RunEscape({"write", Hex(target)});
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 139) << w.run.Describe();
  EXPECT_EQ(w.run.out, "writing 0x" + Hex(target) + "\n") << w.run.Describe();
  EXPECT_TRUE(StartsWith(w.run.err, "flurry: guest fault: ")) << w.run.Describe();
}

TEST(Escape, Int0x80Faults) {
  Watched w = RunEscape({"int80"});
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 139) << w.run.Describe();
  EXPECT_EQ(w.run.out, "") << w.run.Describe();
  EXPECT_TRUE(StartsWith(w.run.err, "flurry: guest fault: ")) << w.run.Describe();
  // Where the host kernel has 32-bit syscalls, the stub reports one; else int 0x80 is a #GP.
  EXPECT_TRUE(Contains(w.run.err, "(int 0x80)") || Contains(w.run.err, "general protection"))
      << w.run.Describe();
}

// ---- the stub's syscall instruction -----------------------------------------------------------

// Jumping to the stub's own `syscall` with a call the stub never makes (or with arguments it
// never uses): the filter kills the stub, flurry reports it. Under KVM the address is not
// mapped: a guest fault.
class JumpToStubSyscall : public ::testing::TestWithParam<const char*> {};

TEST_P(JumpToStubSyscall, KillsTheGuest) {
  const uint64_t insn = Seccomp() ? StubSymbol("flurry_stub_syscall_insn") : kStubText + 0x1000;
  Victim victim;
  Watched w = RunEscape({"site", Hex(insn), GetParam(), std::to_string(victim.pid())});
  EXPECT_EQ(w.run.out, std::string("jumping ") + GetParam() + "\n") << w.run.Describe();
  EXPECT_TRUE(victim.Alive());
  if (Seccomp()) {
    ExpectStubKilledBySeccomp(w);
  } else {
    ExpectEndedCleanly(w);
    EXPECT_EQ(w.run.exit_code, 139) << w.run.Describe();
    EXPECT_TRUE(StartsWith(w.run.err, "flurry: guest fault: ")) << w.run.Describe();
  }
}

INSTANTIATE_TEST_SUITE_P(Escape, JumpToStubSyscall,
                         ::testing::Values("openat", "execve", "socket", "kill", "ptrace", "prctl",
                                           "mmap", "clone", "clone_thread", "clone_lane",
                                           "mprotect_stub", "mprotect_reach", "mprotect_vdso",
                                           "mprotect_bits"));

// The fork token that lets the stub fork must not be readable by the guest (which shares the
// stub's memory): looking where the stub built its filter and forking with what is there gets
// the stub killed, not a process the VMM does not know about.
TEST(Escape, ForkTokenIsNotInStubMemory) {
  if (!Seccomp()) GTEST_SKIP() << "the fork token exists only in the seccomp backend's stub";
  const uint64_t insn = StubSymbol("flurry_stub_syscall_insn");
  const uint64_t filter = StubSymbol("g_filter");
  const uint64_t entries = ElfSymbolSize(FLURRY_STUB_ELF, "g_filter") / 8;
  Watched w = RunEscape({"clone_leak", Hex(insn), Hex(filter), Hex(entries)});
  EXPECT_FALSE(Contains(w.run.out, "forked=")) << w.run.Describe();
  ExpectStubKilledBySeccomp(w);
}

// ---- the page shared with the VMM -------------------------------------------------------------

// The guest replaces the stub's shared page with its own (all allowed from the stub's site),
// with a liveness word that is not 0 (a stub whose word is 0 ends itself after 10 s), and
// spins: the VMM hears nothing more from it. --timeout must still end the run.
TEST(Escape, StubThatStopsAnsweringIsStillStopped) {
  if (!Seccomp()) GTEST_SKIP() << "the shared page exists only in the seccomp backend";
  const uint64_t insn = StubSymbol("flurry_stub_syscall_insn");
  ProcessWatch watch;
  Watched w{
      Flurry({"run", "--timeout", "1s", Guest("escape"), "swap_page", Hex(insn)}, WithDeadline(30)),
      {}};
  w.leftovers = watch.Leftovers();
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 1) << w.run.Describe();
  EXPECT_LT(w.run.seconds, 25) << w.run.Describe();  // --timeout + the VMM's kick limit (10 s)
  EXPECT_TRUE(Contains(w.run.err, "the guest's stub did not answer")) << w.run.Describe();
}

// Forged hand-offs: the VMM reads every field of the page as untrusted input.
TEST(Escape, SharedPageBogusEvent) {
  if (!Seccomp()) GTEST_SKIP() << "the shared page exists only in the seccomp backend";
  Watched w = RunEscape({"garbage", "event"});
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 128 + SIGSYS) << w.run.Describe();
  EXPECT_TRUE(Contains(w.run.err,
                       "its stub reported event 77 (the guest corrupted the stub's "
                       "shared page)"))
      << w.run.Describe();
}

TEST(Escape, SharedPageBogusFault) {
  if (!Seccomp()) GTEST_SKIP() << "the shared page exists only in the seccomp backend";
  Watched w = RunEscape({"garbage", "fault"});
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 139) << w.run.Describe();
  EXPECT_TRUE(StartsWith(w.run.err, "flurry: guest fault: ")) << w.run.Describe();
}

TEST(Escape, SharedPageFilledWithGarbage) {
  if (!Seccomp()) GTEST_SKIP() << "the shared page exists only in the seccomp backend";
  Watched w = RunEscape({"garbage", "fill"});
  ExpectEndedCleanly(w);
  // The stub reads the garbage liveness word as "the VMM died" and ends itself.
  EXPECT_EQ(w.run.exit_code, 1) << w.run.Describe();
  EXPECT_EQ(w.run.out, "filled\n") << w.run.Describe();
  EXPECT_TRUE(StartsWith(w.run.err, "flurry: running the guest: the guest's stub process died: "))
      << w.run.Describe();
}

// The VMM's liveness mutex lives in the shared page: a guest that forges its owner and list
// links must not make the VMM write through them (glibc unlinks a robust mutex it unlocks).
TEST(Escape, SharedPageForgedLivenessMutex) {
  if (!Seccomp()) GTEST_SKIP() << "the shared page exists only in the seccomp backend";
  Watched w = RunEscape({"garbage", "mutex"});
  ExpectEndedCleanly(w);
  EXPECT_EQ(w.run.exit_code, 3) << w.run.Describe();
  EXPECT_EQ(w.run.out, "mutex scribbled\n") << w.run.Describe();
  EXPECT_EQ(w.run.err, "") << w.run.Describe();
}

}  // namespace
