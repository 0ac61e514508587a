#include "daemon/clone_runner.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>

#include "daemon/warm_vmms.h"
#include "flurry/sf_abi.h"

namespace flurry {
namespace {

// A stand-in for the static flurry: a shell script started as `flurry clone-vmm --request-fd 4`
// that, as the real one, waits for its clone's request on fd 4 (docs/protocols/clone_vmm.md:
// a 24-byte header, then NUL-ended strings: work dir, key, argv), enters the work dir and runs
// `body` with the clone's arguments (argv[1..]) as "$@" and the key in $KEY. `before` runs
// first, before the request is read.
class FakeFlurry {
 public:
  explicit FakeFlurry(const std::string& body, const std::string& before = "") {
    char dir[] = "/tmp/clone-runner-test-XXXXXX";
    dir_ = mkdtemp(dir);
    path_ = dir_ + "/flurry";
    std::ofstream(path_) << "#!/bin/sh\n"
                         << "[ \"$1 $2 $3\" = 'clone-vmm --request-fd 4' ] || exit 99\n"
                         << before << "request=\"$(mktemp)\"\n"
                         << "tail -c +25 <&4 | tr '\\000' '\\n' > \"$request\"\n"
                         << "exec 4<&-\n"
                         << "[ -s \"$request\" ] || { rm -f \"$request\"; exit 0; }\n"
                         << "cd \"$(sed -n 1p \"$request\")\" || exit 98\n"
                         << "KEY=\"$(sed -n 2p \"$request\")\"\n"
                         << "set -- $(sed -n '4,$p' \"$request\")\n"
                         << "rm -f \"$request\"\n"
                         << body;
    chmod(path_.c_str(), 0755);
  }
  ~FakeFlurry() { std::system(("rm -rf " + dir_).c_str()); }
  CloneRunSpec Spec() const {
    CloneRunSpec spec;
    spec.flurry_binary = path_;
    spec.page_server = "10.0.0.1:4000";
    spec.family_id = 0xabc;
    spec.clone_id = 7;
    spec.hostname = "host3";
    spec.work_dir = dir_;
    spec.page_server_key = std::string(32, 'b');
    return spec;
  }
  const std::string& dir() const { return dir_; }
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
};

struct Collected {
  std::string out, err;
};

CloneRunResult RunToEnd(
    const CloneRunSpec& spec, Collected& collected,
    std::function<bool()> keep_going = [] { return true; }) {
  auto runner = CloneRunner::Start(spec);
  EXPECT_TRUE(runner.has_value()) << runner.error().message();
  if (!runner) return {};
  return runner->Wait(
      [&](int stream, std::string_view data) {
        (stream == 1 ? collected.out : collected.err).append(data);
        return true;
      },
      keep_going);
}

TEST(CloneCommandLine, RestoresAsTheCloneFromThePageServer) {
  CloneRunSpec spec;
  spec.flurry_binary = "/x/flurry";
  spec.page_server = "10.0.0.1:4000";
  spec.family_id = 0xabc;
  spec.clone_id = 7;
  spec.hostname = "host3";
  spec.prefetch_pages = 16;
  spec.prefix_output = false;
  EXPECT_EQ(
      CloneCommandLine(spec),
      (std::vector<std::string>{"/x/flurry", "restore", "--as-clone", "7", "--family", "abc",
                                "--outcome-fd", "3", "--memory", "on-demand", "--hostname", "host3",
                                "--prefetch", "16", "--no-clone-prefix", "tcp://10.0.0.1:4000"}));
  // An avoidance setting other than all goes on as --avoid, in its canonical form.
  spec.avoid = {true, false, true};
  const std::vector<std::string> argv = CloneCommandLine(spec);
  auto at = std::find(argv.begin(), argv.end(), "--avoid");
  ASSERT_NE(at, argv.end());
  ASSERT_NE(at + 1, argv.end());
  EXPECT_EQ(*(at + 1), "zero,overwritten");
  EXPECT_EQ(argv.back(), "tcp://10.0.0.1:4000");
}

TEST(CloneRunner, RelaysOutputAndTheOutcomeFromFd3) {
  // The outcome message: "FLYO", version 1, EXITED, status 7, signal 0, no result, FNV-1a of
  // nothing (docs/protocols/clone_channel.md), written in octal for dash's printf.
  FakeFlurry flurry(
      "echo \"args: $*\"\n"
      "echo \"cwd: $(pwd)\"\n"
      "echo oops >&2\n"
      "printf '\\106\\114\\131\\117\\001\\000\\001\\000\\007\\000\\000\\000\\000\\000\\000\\000' "
      ">&3\n"
      "printf '\\000\\000\\000\\000\\000\\000\\000\\000' >&3\n"
      "printf '\\045\\043\\042\\204\\344\\234\\362\\313' >&3\n");
  Collected collected;
  CloneRunResult result = RunToEnd(flurry.Spec(), collected);
  EXPECT_EQ(result.outcome.kind, SF_OUTCOME_EXITED) << result.diagnostic;
  EXPECT_EQ(result.outcome.status, 7);
  EXPECT_NE(collected.out.find("args: restore --as-clone 7 --family abc"), std::string::npos)
      << collected.out;
  EXPECT_NE(collected.out.find("cwd: " + flurry.dir() + "\n"), std::string::npos) << collected.out;
  EXPECT_EQ(collected.err, "oops\n");
}

TEST(CloneRunner, TheKeyComesWithTheRequestNotTheEnvironment) {
  FakeFlurry flurry("echo \"key: $KEY env: ${FLURRY_PAGE_KEY:-none}\"\n");
  setenv("FLURRY_PAGE_KEY", "not-for-clones", 1);
  Collected collected;
  RunToEnd(flurry.Spec(), collected);
  unsetenv("FLURRY_PAGE_KEY");
  EXPECT_EQ(collected.out, "key: " + std::string(32, 'b') + " env: none\n");
}

TEST(CloneRunner, AVmmStartedAheadRunsTheCloneItIsGivenLater) {
  // It starts (and says so) before there is a clone; the clone's arguments come with Begin.
  FakeFlurry flurry("echo \"args: $*\"\n", "echo ready\n");
  auto runner = CloneRunner::StartWaiting(CloneVmmSpec{flurry.path(), ""});
  ASSERT_TRUE(runner) << runner.error().message();
  Collected collected;
  // Nothing but "ready" until the clone is given: then its arguments.
  bool begun = false;
  CloneRunResult result = runner->Wait(
      [&](int stream, std::string_view data) {
        (stream == 1 ? collected.out : collected.err).append(data);
        return true;
      },
      [&] {
        if (!begun && collected.out == "ready\n") {
          EXPECT_TRUE(runner->Begin(flurry.Spec()));
          begun = true;
        }
        return true;
      });
  EXPECT_TRUE(begun);
  EXPECT_NE(collected.out.find("ready\nargs: restore --as-clone 7 --family abc"), std::string::npos)
      << collected.out;
  EXPECT_FALSE(runner->Begin(flurry.Spec()));  // once only
}

TEST(CloneRunner, BeginFailsWhenTheVmmIsGone) {
  FakeFlurry flurry("", "exit 3\n");
  auto runner = CloneRunner::StartWaiting(CloneVmmSpec{flurry.path(), ""});
  ASSERT_TRUE(runner) << runner.error().message();
  // Until it has exited and closed its end, a request may still be taken in by the socket.
  for (int i = 0; i < 500 && kill(runner->pid(), 0) == 0; ++i) {
    int status = 0;
    if (waitpid(runner->pid(), &status, WNOHANG) == runner->pid()) break;
    usleep(10000);
  }
  EXPECT_FALSE(runner->Begin(flurry.Spec()));
}

TEST(CloneRunner, AVmmNeverGivenACloneIsEndedWithItsRunner) {
  FakeFlurry flurry("");
  pid_t pid = 0;
  {
    auto runner = CloneRunner::StartWaiting(CloneVmmSpec{flurry.path(), ""});
    ASSERT_TRUE(runner) << runner.error().message();
    pid = runner->pid();
  }
  EXPECT_NE(kill(pid, 0), 0) << "the waiting VMM " << pid << " survived its runner";
}

TEST(WarmVmms, KeepsTheirNumberReadyAndEndsThemWhenStopped) {
  // Each VMM notes its pid when it starts.
  char dir[] = "/tmp/warm-vmms-test-XXXXXX";
  const std::string pids = std::string(mkdtemp(dir)) + "/pids";
  FakeFlurry flurry("echo \"args: $*\"\n", "echo $$ >> " + pids + "\n");
  WarmVmms warm(CloneVmmSpec{flurry.path(), ""}, 2);
  auto wait_ready = [&](int n) {
    for (int i = 0; i < 1000 && warm.ready() < n; ++i) usleep(10000);
    return warm.ready();
  };
  ASSERT_EQ(wait_ready(2), 2);
  std::optional<WaitingVmm> taken = warm.Take();
  ASSERT_TRUE(taken);
  EXPECT_EQ(wait_ready(2), 2);  // another started in its place
  ASSERT_TRUE(taken->runner.Begin(flurry.Spec()));
  Collected collected;
  taken->runner.Wait(
      [&](int stream, std::string_view data) {
        (stream == 1 ? collected.out : collected.err).append(data);
        return true;
      },
      [] { return true; });
  EXPECT_NE(collected.out.find("args: restore --as-clone 7"), std::string::npos) << collected.out;
  EXPECT_EQ(wait_ready(2), 2);
  // All three have started (noted their pids) before they are ended.
  auto noted = [&] {
    std::ifstream in(pids);
    int n = 0;
    for (std::string line; std::getline(in, line);) ++n;
    return n;
  };
  for (int i = 0; i < 1000 && noted() < 3; ++i) usleep(10000);
  warm.Stop();
  EXPECT_FALSE(warm.Take());
  // Three started (the one taken, two waiting); none is left.
  std::ifstream in(pids);
  int started = 0;
  for (pid_t pid = 0; in >> pid; ++started) {
    for (int i = 0; i < 100 && kill(pid, 0) == 0; ++i) usleep(10000);
    EXPECT_NE(kill(pid, 0), 0) << pid;
  }
  EXPECT_EQ(started, 3);
  std::system(("rm -rf " + std::string(dir)).c_str());
}

TEST(WarmVmms, MakeEachClonesDirectoryAheadAndRemoveTheUnusedOnes) {
  FakeFlurry flurry("");
  const std::string dirs = flurry.dir() + "/clones";
  ASSERT_EQ(mkdir(dirs.c_str(), 0700), 0);
  WarmVmms warm(CloneVmmSpec{flurry.path(), ""}, 2, dirs);
  for (int i = 0; i < 1000 && warm.ready() < 2; ++i) usleep(10000);
  ASSERT_EQ(warm.ready(), 2);
  std::optional<WaitingVmm> taken = warm.Take();
  ASSERT_TRUE(taken);
  ASSERT_FALSE(taken->work_dir.empty());
  EXPECT_EQ(taken->work_dir.rfind(dirs + "/", 0), 0u) << taken->work_dir;
  struct stat st {};
  EXPECT_EQ(stat((taken->work_dir + "/root").c_str(), &st), 0);
  for (int i = 0; i < 1000 && warm.ready() < 2; ++i) usleep(10000);
  warm.Stop();
  // Only the taken one's directory is left (its clone's to remove).
  std::vector<std::string> left;
  for (const auto& entry : std::filesystem::directory_iterator(dirs)) {
    left.push_back(entry.path().string());
  }
  EXPECT_EQ(left, std::vector<std::string>{taken->work_dir});
}

TEST(WarmVmms, AnExpectedMemorySizeReplacesTheVmmsMadeForAnother) {
  // Each VMM notes its pid and arguments when it starts.
  FakeFlurry flurry("");
  const std::string log = flurry.dir() + "/started";
  FakeFlurry noting("", "echo \"$$ $*\" >> " + log + "\n");
  WarmVmms warm(CloneVmmSpec{noting.path(), "kvm"}, 2);
  auto lines = [&] {
    std::ifstream in(log);
    std::vector<std::string> all;
    for (std::string line; std::getline(in, line);) all.push_back(line);
    return all;
  };
  for (int i = 0; i < 1000 && (warm.ready() < 2 || lines().size() < 2); ++i) usleep(10000);
  ASSERT_EQ(lines().size(), 2u);
  warm.ExpectRam(4 << 20);
  for (int i = 0; i < 1000 && lines().size() < 4; ++i) usleep(10000);
  for (int i = 0; i < 1000 && warm.ready() < 2; ++i) usleep(10000);
  const std::vector<std::string> started = lines();
  ASSERT_EQ(started.size(), 4u);
  for (size_t k = 0; k < 4; ++k) {
    EXPECT_NE(started[k].find("clone-vmm --request-fd 4 --backend kvm"), std::string::npos)
        << started[k];
    EXPECT_EQ(started[k].find("--ram-bytes 4194304") != std::string::npos, k >= 2) << started[k];
  }
  // The first two are gone.
  for (size_t k = 0; k < 2; ++k) {
    const pid_t pid = std::stoi(started[k]);
    for (int i = 0; i < 100 && kill(pid, 0) == 0; ++i) usleep(10000);
    EXPECT_NE(kill(pid, 0), 0) << started[k];
  }
  std::optional<WaitingVmm> taken = warm.Take();
  ASSERT_TRUE(taken);
  EXPECT_EQ(taken->ram_bytes, 4u << 20);
}

TEST(WarmVmms, AVmmThatEndedWhileWaitingIsNotGiven) {
  FakeFlurry flurry("", "exit 0\n");  // each ends at once instead of waiting
  WarmVmms warm(CloneVmmSpec{flurry.path(), ""}, 2);
  for (int i = 0; i < 1000 && warm.ready() < 2; ++i) usleep(10000);
  ASSERT_EQ(warm.ready(), 2);
  usleep(200000);  // they have ended by now
  EXPECT_FALSE(warm.Take());
}

TEST(WarmVmms, AProgramThatCannotStartLeavesThePoolEmpty) {
  WarmVmms warm(CloneVmmSpec{"/nonexistent/flurry", ""}, 2);
  usleep(100000);
  EXPECT_EQ(warm.ready(), 0);
  EXPECT_FALSE(warm.Take());
}

TEST(CloneRunner, NoOutcomeIsLostWithTheExitStatus) {
  FakeFlurry flurry("echo 'flurry: restoring: connection refused' >&2\nexit 1\n");
  Collected collected;
  CloneRunResult result = RunToEnd(flurry.Spec(), collected);
  EXPECT_EQ(result.outcome.kind, SF_OUTCOME_LOST);
  EXPECT_NE(result.diagnostic.find("exited with status 1"), std::string::npos) << result.diagnostic;
  EXPECT_NE(collected.err.find("connection refused"), std::string::npos);
}

TEST(CloneRunner, AGarbledOutcomeIsLostNotTrusted) {
  FakeFlurry flurry("printf 'garbage that is not an outcome at all....' >&3\n");
  Collected collected;
  CloneRunResult result = RunToEnd(flurry.Spec(), collected);
  EXPECT_EQ(result.outcome.kind, SF_OUTCOME_LOST);
  EXPECT_NE(result.diagnostic.find("outcome"), std::string::npos) << result.diagnostic;
}

TEST(CloneRunner, GivingUpKillsTheCloneAndWhatItStarted) {
  // The clone starts a child of its own (as a clone VMM starts snapshot processes); both go.
  FakeFlurry flurry("sleep 600 &\necho $! > child.pid\necho started\nsleep 600\n");
  Collected collected;
  bool stop = false;
  const auto start = std::chrono::steady_clock::now();
  CloneRunResult result = RunToEnd(flurry.Spec(), collected, [&] {
    if (collected.out.find("started") != std::string::npos) stop = true;
    return !stop;
  });
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(30));
  EXPECT_EQ(result.outcome.kind, SF_OUTCOME_LOST);
  EXPECT_EQ(result.diagnostic, "the clone was stopped");
  std::ifstream pid_file(flurry.dir() + "/child.pid");
  pid_t child = 0;
  ASSERT_TRUE(pid_file >> child);
  for (int i = 0; i < 100 && kill(child, 0) == 0; ++i) usleep(20000);
  EXPECT_NE(kill(child, 0), 0) << "the clone's child " << child << " survived";
}

}  // namespace
}  // namespace flurry
