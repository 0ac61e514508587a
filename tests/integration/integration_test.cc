// End-to-end tests of `flurry run`: each test runs the flurry binary on a guest program (built
// in tests/guest) and checks its exact stdout, stderr and exit status. The harness (running
// flurry under a deadline, capturing its output) is in harness.h.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <linux/kvm.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include "harness.h"

namespace {

using namespace flurry_test;

// ---------------------------------------------------------------------------------------------
// Environment

// The backend these tests run flurry on ($FLURRY_BACKEND, as tests/integration/CMakeLists.txt
// sets it): "kvm", "seccomp", or "" (auto).
std::string BackendUnderTest() {
  const char* backend = std::getenv("FLURRY_BACKEND");
  return backend != nullptr ? backend : "";
}

// A KVM-backend run must never pass by quietly running on another backend.
TEST(Environment, KvmAvailableWhereTheKvmBackendIsTested) {
  if (BackendUnderTest() != "kvm") GTEST_SKIP() << "not testing the kvm backend";
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  ASSERT_GE(fd, 0) << "/dev/kvm cannot be opened read/write (" << strerror(errno)
                   << "): flurry needs KVM. Run the tests on a Linux host with KVM enabled "
                      "(kvm_intel/kvm_amd loaded, nested virtualization on in a VM) and access "
                      "to /dev/kvm.";
  int version = ioctl(fd, KVM_GET_API_VERSION, 0);
  close(fd);
  EXPECT_EQ(version, KVM_API_VERSION) << "unexpected KVM API version";
}

TEST(Environment, BinariesBuilt) {
  EXPECT_EQ(access(FlurryBinary().c_str(), X_OK), 0) << FlurryBinary() << ": " << strerror(errno);
  EXPECT_EQ(access(Guest("hello").c_str(), X_OK), 0) << Guest("hello") << ": " << strerror(errno);
}

// ---------------------------------------------------------------------------------------------
// Command line

TEST(Cli, RunHelpExitsZero) {
  auto r = Flurry({"run", "--help"});
  EXPECT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  for (const char* option : {"--mem", "--dir", "--timeout"})
    EXPECT_NE(r.out.find(option), std::string::npos) << "help lacks " << option << r.Describe();
}

TEST(Cli, TopLevelHelpExitsZero) {
  auto r = Flurry({"--help"});
  EXPECT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_NE(r.out.find("run"), std::string::npos) << r.Describe();
}

TEST(Cli, RunWithoutProgramIsUsageError) { ExpectUsageError(Flurry({"run"})); }

TEST(Cli, MalformedMemIsUsageError) {
  ExpectUsageError(Flurry({"run", "--mem", "lots", Guest("hello")}));
}

TEST(Cli, MemTooSmallIsRejected) {
  ExpectUsageError(Flurry({"run", "--mem", "1M", Guest("hello")}));
}

TEST(Cli, MemTooLargeIsRejected) {
  ExpectUsageError(Flurry({"run", "--mem", "1T", Guest("hello")}));
}

TEST(Cli, MalformedTimeoutIsUsageError) {
  ExpectUsageError(Flurry({"run", "--timeout", "soon", Guest("hello")}));
}

// ---------------------------------------------------------------------------------------------
// hello

TEST(Hello, PrintsGreetingAndExitsZero) {
  auto r = Flurry({"run", Guest("hello")});
  ExpectCleanExit(r, 0);
  EXPECT_EQ(r.out, "hello from flurry\nargc=1\nargv[0]=" + Guest("hello") + "\n") << r.Describe();
}

TEST(Hello, ExitCodeFromArgv) {
  auto r = Flurry({"run", Guest("hello"), "42"});
  ExpectCleanExit(r, 42);
  EXPECT_EQ(r.out, "hello from flurry\nargc=2\nargv[0]=" + Guest("hello") + "\nargv[1]=42\n")
      << r.Describe();
}

TEST(Hello, ExitStatusIsLow8Bits) {
  auto r = Flurry({"run", Guest("hello"), "263"});
  ExpectCleanExit(r, 7);
}

// Arguments after PROGRAM belong to the guest, even ones that look like flurry's options.
TEST(Hello, ArgsPassedVerbatim) {
  auto r = Flurry({"run", Guest("hello"), "3", "two words", "", "--mem", "--help", "-x", "ünï"});
  ExpectCleanExit(r, 3);
  EXPECT_EQ(r.out, "hello from flurry\nargc=8\nargv[0]=" + Guest("hello") +
                       "\nargv[1]=3\nargv[2]=two words\nargv[3]=\nargv[4]=--mem\n"
                       "argv[5]=--help\nargv[6]=-x\nargv[7]=ünï\n")
      << r.Describe();
}

TEST(Hello, ManyArgs) {
  std::vector<std::string> args = {"run", Guest("hello"), "0"};
  std::string expected =
      "hello from flurry\nargc=2002\nargv[0]=" + Guest("hello") + "\nargv[1]=0\n";
  for (int i = 2; i < 2002; i++) {
    args.push_back("arg" + std::to_string(i));
    expected += "argv[" + std::to_string(i) + "]=arg" + std::to_string(i) + "\n";
  }
  auto r = Flurry(args);
  ExpectCleanExit(r, 0);
  EXPECT_EQ(r.out, expected) << r.Describe();
}

TEST(Hello, StaticPie) {
  auto r = Flurry({"run", Guest("hello_static_pie"), "5", "pie"});
  ExpectCleanExit(r, 5);
  EXPECT_EQ(r.out, "hello from flurry\nargc=3\nargv[0]=" + Guest("hello_static_pie") +
                       "\nargv[1]=5\nargv[2]=pie\n")
      << r.Describe();
}

TEST(Hello, WithTimeoutNotReached) {
  auto r = Flurry({"run", "--timeout", "30s", Guest("hello"), "4"});
  ExpectCleanExit(r, 4);
  EXPECT_LT(r.seconds, 10) << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// C++ runtime

TEST(CxxFeatures, AllOk) {
  auto r = Flurry({"run", Guest("cxx_features")});
  ExpectCleanExit(r, 0);
  EXPECT_EQ(r.out,
            "cxx_features starting\n"
            "ok exceptions\n"
            "ok sort 100000 ints\n"
            "ok map\n"
            "ok string\n"
            "ok vector 64 MiB\n"
            "all ok\n")
      << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// Files (--dir)

constexpr const char* kSentinel = "SENTINEL: the guest must never see or change this\n";

// base/sentinel (outside the guest's root) and base/root, the guest's "/".
struct FilesFixture {
  TempDir temp;
  fs::path base = temp.path();
  fs::path root = base / "root";

  FilesFixture() {
    fs::create_directory(root);
    fs::create_directory(root / "sub");
    WriteFile(base / "sentinel", kSentinel);
    WriteFile(root / "hello.txt", "file content\n");
    WriteFile(root / "sub" / "a.txt", "in sub\n");
    WriteFile(root / "to_delete.txt", "delete me\n");
    fs::create_symlink("../sentinel", root / "escape_link");
    fs::create_symlink(base / "sentinel", root / "abs_link");
    fs::create_directory_symlink("..", root / "dir_link");
  }

  // Nothing outside the root changed.
  void ExpectOutsideUntouched(const RunResult& r) const {
    std::set<std::string> names;
    for (const auto& e : fs::directory_iterator(base)) names.insert(e.path().filename().string());
    EXPECT_EQ(names, (std::set<std::string>{"root", "sentinel"}))
        << "the guest created or removed files outside its root" << r.Describe();
    EXPECT_TRUE(fs::is_regular_file(fs::symlink_status(base / "sentinel"))) << r.Describe();
    EXPECT_EQ(ReadFile(base / "sentinel"), kSentinel) << "sentinel modified" << r.Describe();
  }
};

const char* const kFilesCommonHead =
    "cwd: /\n"
    "read /hello.txt: file content\n"
    "read hello.txt: file content\n"
    "read /sub/a.txt: in sub\n"
    "read /sub/../hello.txt: file content\n"
    "read /missing.txt: ENOENT\n"
    "ls /: abs_link dir_link escape_link hello.txt sub to_delete.txt\n"
    "ls /sub: a.txt\n";

const char* const kFilesEscapeReads =
    "escape ../sentinel: denied\n"
    "escape /../sentinel: denied\n"
    "escape /sub/../../sentinel: denied\n"
    "escape ../../../../../../../etc/passwd: denied\n"
    "escape /etc/passwd: denied\n"
    "escape escape_link: denied\n"
    "escape abs_link: denied\n"
    "escape dir_link/sentinel: denied\n"
    "escape /dir_link/../sentinel: denied\n";

// Splits the files guest's stdout: "escape-ls"/"escape-write" lines (whose result may be
// either an error or, with chroot-like resolution, an operation inside the root) are checked
// separately; everything else must match exactly.
struct FilesOutput {
  std::string exact;
  std::vector<std::string> escape_ls;
  std::vector<std::string> escape_write;
};

FilesOutput SplitFilesOutput(const std::string& out) {
  FilesOutput result;
  for (const auto& line : Lines(out)) {
    if (StartsWith(line, "escape-ls "))
      result.escape_ls.push_back(line);
    else if (StartsWith(line, "escape-write "))
      result.escape_write.push_back(line);
    else
      result.exact += line + "\n";
  }
  return result;
}

void ExpectEscapeListingsConfined(const FilesOutput& output, const RunResult& r) {
  ASSERT_EQ(output.escape_ls.size(), 2u) << r.Describe();
  for (const auto& line : output.escape_ls) {
    std::istringstream words(line);
    std::string word;
    while (words >> word) {
      EXPECT_NE(word, "sentinel") << "listing escaped the root: " << line << r.Describe();
      EXPECT_NE(word, "root") << "listing escaped the root: " << line << r.Describe();
    }
  }
}

TEST(Files, ReadOnlyRoot) {
  FilesFixture f;
  auto r = Flurry({"run", "--dir", f.root.string(), Guest("files"), "ro"});
  EXPECT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  auto output = SplitFilesOutput(r.out);
  EXPECT_EQ(output.exact, std::string(kFilesCommonHead) +
                              "create /new.txt: EROFS\n"
                              "open-write /hello.txt: EROFS\n"
                              "mkdir /newdir: EROFS\n"
                              "unlink /to_delete.txt: EROFS\n" +
                              kFilesEscapeReads + "done\n")
      << r.Describe();
  ExpectEscapeListingsConfined(output, r);
  EXPECT_TRUE(output.escape_write.empty()) << r.Describe();

  // The host side: nothing changed at all.
  EXPECT_EQ(ReadFile(f.root / "hello.txt"), "file content\n");
  EXPECT_TRUE(fs::exists(f.root / "to_delete.txt"));
  EXPECT_FALSE(fs::exists(f.root / "new.txt"));
  EXPECT_FALSE(fs::exists(f.root / "newdir"));
  f.ExpectOutsideUntouched(r);
}

TEST(Files, ReadWriteRoot) {
  FilesFixture f;
  auto r = Flurry({"run", "--dir", f.root.string() + ":rw", Guest("files"), "rw"});
  EXPECT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  auto output = SplitFilesOutput(r.out);
  EXPECT_EQ(output.exact, std::string(kFilesCommonHead) +
                              "create /new.txt: ok\n"
                              "read /new.txt: written by guest\n"
                              "open-write /hello.txt: ok\n"
                              "mkdir /newdir: ok\n"
                              "create /newdir/inner.txt: ok\n"
                              "unlink /to_delete.txt: ok\n"
                              "ls /: abs_link dir_link escape_link hello.txt new.txt newdir sub\n"
                              "ls /newdir: inner.txt\n" +
                              kFilesEscapeReads + "done\n")
      << r.Describe();
  ExpectEscapeListingsConfined(output, r);
  EXPECT_EQ(output.escape_write.size(), 8u) << r.Describe();

  // The host side: the guest's changes landed inside the root, and only there.
  EXPECT_EQ(ReadFile(f.root / "new.txt"), "written by guest\n") << r.Describe();
  EXPECT_EQ(ReadFile(f.root / "hello.txt"), "file content\nPWNED\n") << r.Describe();
  EXPECT_EQ(ReadFile(f.root / "newdir" / "inner.txt"), "inner\n") << r.Describe();
  EXPECT_FALSE(fs::exists(f.root / "to_delete.txt")) << r.Describe();
  f.ExpectOutsideUntouched(r);
}

TEST(Files, MissingDirIsError) {
  TempDir t;
  ExpectInputError(
      Flurry({"run", "--dir", (t.path() / "does_not_exist").string(), Guest("hello")}));
}

TEST(Files, DirThatIsAFileIsError) {
  TempDir t;
  WriteFile(t.path() / "file", "x");
  ExpectInputError(Flurry({"run", "--dir", (t.path() / "file").string(), Guest("hello")}));
}

// ---------------------------------------------------------------------------------------------
// Guest faults: exit status 128 + signal, a one-line diagnostic.

void ExpectFault(const std::string& kind, int status) {
  auto r = Flurry({"run", Guest("faults"), kind});
  EXPECT_FALSE(r.timed_out) << r.Describe();
  ASSERT_TRUE(r.exited) << "flurry itself died" << r.Describe();
  EXPECT_EQ(r.exit_code, status) << r.Describe();
  EXPECT_EQ(r.out, "faulting: " + kind + "\n") << r.Describe();
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << "expected a one-line diagnostic" << r.Describe();
  EXPECT_TRUE(StartsWith(lines[0], "flurry: guest fault: ")) << r.Describe();
}

TEST(Faults, NullDereferenceIs139) { ExpectFault("null", 128 + SIGSEGV); }
TEST(Faults, Ud2Is132) { ExpectFault("ud2", 128 + SIGILL); }
TEST(Faults, DivideErrorIs136) { ExpectFault("div0", 128 + SIGFPE); }

// ---------------------------------------------------------------------------------------------
// Unsupported syscalls: -ENOSYS, reported once per syscall.

TEST(UnknownSyscall, EnosysReportedOncePerName) {
  auto r = Flurry({"run", Guest("unknown_syscall")});
  EXPECT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out,
            "syscall 425: ENOSYS\n"
            "syscall 425: ENOSYS\n"
            "syscall 999: ENOSYS\n"
            "syscall 999: ENOSYS\n")
      << r.Describe();
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 2u) << "expected exactly one report per unsupported syscall"
                              << r.Describe();
  EXPECT_EQ(lines[0],
            "flurry: guest called unsupported syscall 'io_uring_setup' (425); returning ENOSYS")
      << r.Describe();
  EXPECT_TRUE(StartsWith(lines[1], "flurry: guest called unsupported syscall ")) << r.Describe();
  EXPECT_NE(lines[1].find("(999)"), std::string::npos) << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// --timeout

TEST(Timeout, SpinningGuestKilledWith124) {
  auto r = Flurry({"run", "--timeout", "1s", Guest("spin")}, WithDeadline(30));
  EXPECT_FALSE(r.timed_out) << "--timeout did not stop the guest" << r.Describe();
  ASSERT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 124) << r.Describe();
  EXPECT_EQ(r.out, "spinning\n") << r.Describe();
  EXPECT_GE(r.seconds, 0.9) << r.Describe();
  EXPECT_LT(r.seconds, 5) << r.Describe();
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << "expected a one-line message" << r.Describe();
  EXPECT_TRUE(StartsWith(lines[0], "flurry: ")) << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// What the guest sees of its environment.

TEST(EnvInfo, Sane) {
  TempDir t;
  time_t before = time(nullptr);
  auto r = Flurry({"run", "--mem", "256M", "--dir", t.path().string(), Guest("env_info")});
  time_t after = time(nullptr);
  ExpectCleanExit(r, 0);
  std::map<std::string, std::string> kv;
  for (const auto& line : Lines(r.out)) {
    auto colon = line.find(": ");
    ASSERT_NE(colon, std::string::npos) << line << r.Describe();
    kv[line.substr(0, colon)] = line.substr(colon + 2);
  }
  EXPECT_GE(std::atoi(kv["pid"].c_str()), 1) << r.Describe();
  EXPECT_EQ(kv["sysname"], "Linux") << r.Describe();
  EXPECT_EQ(kv["machine"], "x86_64") << r.Describe();
  EXPECT_FALSE(kv["nodename"].empty()) << r.Describe();
  EXPECT_FALSE(kv["release"].empty()) << r.Describe();
  EXPECT_EQ(kv["monotonic advancing"], "yes") << r.Describe();
  EXPECT_TRUE(StartsWith(kv["nanosleep 10ms"], "ok, elapsed_ms: ")) << r.Describe();
  int slept_ms = std::atoi(kv["nanosleep 10ms"].substr(strlen("ok, elapsed_ms: ")).c_str());
  EXPECT_GE(slept_ms, 10) << r.Describe();
  EXPECT_LT(slept_ms, 5000) << r.Describe();
  for (const char* key : {"time", "realtime_s"}) {
    long long t = std::atoll(kv[key].c_str());
    EXPECT_GE(t, static_cast<long long>(before) - 2) << key << r.Describe();
    EXPECT_LE(t, static_cast<long long>(after) + 2) << key << r.Describe();
  }
  const std::string& rnd = kv["getrandom"];
  EXPECT_EQ(rnd.size(), 32u) << r.Describe();
  EXPECT_EQ(rnd.find_first_not_of("0123456789abcdef"), std::string::npos) << r.Describe();
  EXPECT_NE(rnd, std::string(32, '0')) << r.Describe();
  unsigned long long totalram = std::strtoull(kv["totalram"].c_str(), nullptr, 10);
  EXPECT_GT(totalram, 0u) << r.Describe();
  EXPECT_LE(totalram, 256ull << 20) << r.Describe();
  // A VM shows the CPUs its threads may run on: the host's, at most the backend's lanes (the
  // stub's 16 threads, KVM's 8 vCPUs).
  const bool kvm = BackendUnderTest() == "kvm" ||
                   (BackendUnderTest() != "seccomp" && access("/dev/kvm", R_OK | W_OK) == 0);
  const long host_cpus = sysconf(_SC_NPROCESSORS_ONLN);
  EXPECT_EQ(kv["cpus"], std::to_string(std::min(host_cpus, kvm ? 8L : 16L))) << r.Describe();
  EXPECT_EQ(kv["cwd"], "/") << r.Describe();
  EXPECT_EQ(kv["isatty(1)"], "0") << r.Describe();
}

TEST(EnvInfo, GetrandomDiffersBetweenRuns) {
  TempDir t;
  auto get = [&] {
    auto r = Flurry({"run", "--dir", t.path().string(), Guest("env_info")});
    for (const auto& line : Lines(r.out))
      if (StartsWith(line, "getrandom: ")) return line;
    ADD_FAILURE() << "no getrandom line" << r.Describe();
    return std::string();
  };
  EXPECT_NE(get(), get());
}

// ---------------------------------------------------------------------------------------------
// stdin

TEST(Stdin, EchoesBinaryInput) {
  std::string input = "line one\nline two\n";
  std::mt19937 rng(7);
  while (input.size() < (1u << 20)) input.push_back(static_cast<char>(rng()));
  auto r = Flurry({"run", Guest("stdin_echo")}, WithStdin(input));
  ExpectCleanExit(r, 0);
  EXPECT_EQ(r.out.size(), input.size()) << r.Describe();
  EXPECT_TRUE(r.out == input) << "stdout differs from stdin";
}

TEST(Stdin, EmptyInput) {
  auto r = Flurry({"run", Guest("stdin_echo")});
  ExpectCleanExit(r, 0);
  EXPECT_EQ(r.out, "") << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// Memory limits

TEST(Memory, OomIsBadAllocWith64M) {
  auto r = Flurry({"run", "--mem", "64M", Guest("oom")});
  EXPECT_FALSE(r.timed_out) << r.Describe();
  ASSERT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "bad_alloc caught\nallocation after free ok\n") << r.Describe();
  // The guest reports how much it got on stderr; nothing else may be there.
  auto lines = Lines(r.err);
  ASSERT_EQ(lines.size(), 1u) << r.Describe();
  EXPECT_TRUE(StartsWith(lines[0], "oom: allocated ")) << r.Describe();
  int mib = std::atoi(lines[0].substr(strlen("oom: allocated ")).c_str());
  EXPECT_GT(mib, 16) << "far less memory than --mem 64M" << r.Describe();
  EXPECT_LE(mib, 64) << r.Describe();
}

TEST(Memory, BigBssRunsWithEnoughMemory) {
  auto r = Flurry({"run", "--mem", "1G", Guest("big_bss")});
  ExpectCleanExit(r, 0);
  EXPECT_EQ(r.out, "big_bss pages touched: 65536\n") << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// Bad guest pointers: every syscall returns EFAULT, the VMM survives.

TEST(BadPointers, AllEfault) {
  TempDir t;
  auto r = Flurry({"run", "--dir", t.path().string(), Guest("badptr")},
                  WithStdin(std::string(100, 'x')));
  ExpectCleanExit(r, 0);
  EXPECT_EQ(r.out,
            "write(1, 0x1, 10): EFAULT\n"
            "write(1, 0x7fff00000000, 10): EFAULT\n"
            "write(1, 0x20000 page tables, 16): EFAULT\n"
            "read(0, NULL, 10): EFAULT\n"
            "read(0, 0x1000 gdt, 10): EFAULT\n"
            "openat(AT_FDCWD, 0x10): EFAULT\n"
            "uname(0x1): EFAULT\n"
            "clock_gettime(MONOTONIC, 0x1): EFAULT\n"
            "getrandom(NULL, 16): EFAULT\n"
            "getcwd(0x1, 4096): EFAULT\n"
            "done\n")
      << r.Describe();
}

// ---------------------------------------------------------------------------------------------
// Bad input: exit status 1 and a one-line "flurry: ..." error, never a crash.

TEST(BadInput, NotAnElf) { ExpectInputError(Flurry({"run", Fixture("not_elf.txt")})); }
TEST(BadInput, EmptyFile) { ExpectInputError(Flurry({"run", Fixture("empty")})); }
TEST(BadInput, TruncatedElf) { ExpectInputError(Flurry({"run", Fixture("hello_truncate")})); }
TEST(BadInput, Elf32) { ExpectInputError(Flurry({"run", Fixture("hello_elf32")})); }

TEST(BadInput, DynamicallyLinkedSaysLinkStatic) {
  auto r = Flurry({"run", Guest("hello_dynamic")});
  ExpectInputError(r);
  EXPECT_NE(r.err.find("-static"), std::string::npos) << r.Describe();
}

TEST(BadInput, HugeSegment) { ExpectInputError(Flurry({"run", Fixture("hello_huge_memsz")})); }
TEST(BadInput, SegmentAtAddressZero) {
  ExpectInputError(Flurry({"run", Fixture("hello_low_vaddr")}));
}
TEST(BadInput, SegmentAboveMemory) {
  ExpectInputError(Flurry({"run", Fixture("hello_high_vaddr")}));
}

TEST(BadInput, ProgramLargerThanMem) {
  ExpectInputError(Flurry({"run", "--mem", "64M", Guest("big_bss")}));
}

TEST(BadInput, MissingProgram) { ExpectInputError(Flurry({"run", Fixture("no_such_program")})); }

TEST(BadInput, DirectoryAsProgram) { ExpectInputError(Flurry({"run", GuestDir()})); }

TEST(Environment, VerboseSaysWhichBackendRuns) {
  auto r = Flurry({"run", "-v", Guest("hello")});
  EXPECT_TRUE(r.exited && r.exit_code == 0) << r.Describe();
  const std::string expected = BackendUnderTest().empty() || BackendUnderTest() == "auto"
                                   ? "flurry: backend: "
                                   : "flurry: backend: " + BackendUnderTest() + "\n";
  EXPECT_NE(r.err.find(expected), std::string::npos) << r.Describe();
}

// Without /dev/kvm, --backend kvm is a clear error; auto runs the guest on seccomp.
TEST(BadInput, NoKvm) {
  auto r = Flurry({"run", "--backend", "kvm", Guest("hello")}, WithoutKvm());
  if (r.exited && r.exit_code == kCannotHideKvm)
    GTEST_SKIP() << "cannot hide /dev/kvm here: " << r.err;
  ExpectInputError(r);
  EXPECT_NE(r.err.find("kvm backend is not available"), std::string::npos) << r.Describe();
  EXPECT_NE(r.err.find("/dev/kvm"), std::string::npos) << r.Describe();

  RunOptions options = WithoutKvm();
  options.env.push_back({"FLURRY_BACKEND", "auto"});
  auto fallback = Flurry({"run", "-v", Guest("hello")}, options);
  EXPECT_TRUE(fallback.exited && fallback.exit_code == 0) << fallback.Describe();
  EXPECT_NE(fallback.err.find("flurry: backend: seccomp"), std::string::npos)
      << fallback.Describe();
}

TEST(BadInput, UnknownBackendIsAUsageError) {
  auto r = Flurry({"run", "--backend", "xen", Guest("hello")});
  ExpectUsageError(r);
  EXPECT_NE(r.err.find("unknown backend 'xen'"), std::string::npos) << r.Describe();
}

}  // namespace
