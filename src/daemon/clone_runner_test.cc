#include "daemon/clone_runner.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>

#include "flurry/sf_abi.h"

namespace flurry {
namespace {

// A stand-in for the static flurry: a shell script that receives the clone's command line.
class FakeFlurry {
 public:
  explicit FakeFlurry(const std::string& body) {
    char dir[] = "/tmp/clone-runner-test-XXXXXX";
    dir_ = mkdtemp(dir);
    path_ = dir_ + "/flurry";
    std::ofstream(path_) << "#!/bin/sh\n" << body;
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
    return spec;
  }
  const std::string& dir() const { return dir_; }

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
