// Debian's busybox (busybox-static), unmodified: shell scripts with pipes, loops, subshells,
// command substitution and the usual tools. Each script's output and exit status in flurry
// are those of the same busybox run natively, in a directory holding the same files. busybox's
// shell forks for every pipeline stage and subshell, and runs most applets by execve of
// /proc/self/exe: processes, pipes, wait4 and execve all take part.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>

#include "harness.h"

namespace {
using namespace flurry_test;

constexpr const char* kBusybox = "/bin/busybox";

struct Script {
  const char* name;
  const char* text;  // run with the directory holding the files as the working directory
};

const Script kScripts[] = {
    {"pipe", "echo hi | wc -c"},
    {"sort", "seq 100000 | sort -n | tail -1"},
    {"loop", "for i in 1 2 3; do echo $i; done | sed s/2/two/ | awk '{print $1}'"},
    {"subshell", "x=$(echo sub); echo $x; (cd sub && ls); echo after $(echo in | wc -c)"},
    {"find", "find . -name '*.txt' | sort | xargs wc -l"},
    {"status", "(exit 4); echo $?; false || echo failed; sh -c 'exit 3'; echo $?"},
    {"words", "cat words.txt | tr ' ' '\\n' | sort | uniq -c | sort -rn | head -3"},
    {"files", "sort words.txt > sorted.txt && wc -l < sorted.txt && cat sorted.txt | head -2"},
    {"exit", "echo out; exit 7"},
    {"devices",
     "ls nothing 2>/dev/null || echo quiet; head -c 5 /dev/zero | wc -c; "
     "head -c 16 /dev/urandom | wc -c; echo to-null > /dev/null; [ -c /dev/null ] && echo char; "
     "cat /dev/null | wc -c"},  // (not /dev/stdout: natively, a socket as stdout cannot be
                                // reopened)
};

// The same files for both runs.
void MakeFiles(const fs::path& dir) {
  fs::create_directories(dir / "sub");
  WriteFile(dir / "a.txt", "one\ntwo\nthree\n");
  WriteFile(dir / "sub" / "c.txt", "1\n2\n");
  WriteFile(dir / "words.txt", "the fork and the clone and the page\nthe vm of the host\n");
}

void PrintTo(const Script& script, std::ostream* os) { *os << script.name; }

class Busybox : public ::testing::TestWithParam<Script> {
 protected:
  void SetUp() override {
    if (access(kBusybox, X_OK) != 0) GTEST_SKIP() << kBusybox << " missing (busybox-static)";
  }
};

TEST_P(Busybox, ScriptRunsAsNatively) {
  const Script& script = GetParam();
  TempDir native_dir, guest_dir;
  MakeFiles(native_dir.path());
  MakeFiles(guest_dir.path());
  fs::copy_file(kBusybox, guest_dir.path() / "busybox");
  const RunResult native = flurry_test::Run(
      {kBusybox, "sh", "-c", "cd " + native_dir.path().string() + " && " + script.text});
  const RunResult guest = Flurry({"run", "--dir", guest_dir.path().string() + ":rw",
                                  (guest_dir.path() / "busybox").string(), "sh", "-c",
                                  std::string("cd / && ") + script.text});
  ASSERT_TRUE(native.exited) << native.Describe();
  EXPECT_TRUE(guest.exited) << guest.Describe();
  EXPECT_EQ(guest.out, native.out) << guest.Describe();
  EXPECT_EQ(guest.err, native.err) << guest.Describe();
  EXPECT_EQ(guest.exit_code, native.exit_code) << guest.Describe();
  // What the scripts wrote is the same too.
  if (fs::exists(native_dir.path() / "sorted.txt")) {
    EXPECT_EQ(ReadFile(guest_dir.path() / "sorted.txt"),
              ReadFile(native_dir.path() / "sorted.txt"));
  }
}

INSTANTIATE_TEST_SUITE_P(Scripts, Busybox, ::testing::ValuesIn(kScripts),
                         [](const ::testing::TestParamInfo<Script>& info) {
                           return std::string(info.param.name);
                         });

// Under sf_clone: three clones of a VM each execve busybox, whose script sees the clone's ID
// and runs a pipeline of its own; each clone's output is its own (prefixed "[clone N] "), and
// its exit status reaches the parent.
TEST(BusyboxClones, EachCloneRunsItsOwnPipeline) {
  if (access(kBusybox, X_OK) != 0) GTEST_SKIP() << kBusybox << " missing (busybox-static)";
  TempDir dir;
  MakeFiles(dir.path());
  fs::copy_file(kBusybox, dir.path() / "busybox");
  const RunResult r = Flurry(
      {"run", "--dir", dir.path().string(), std::string(WORKLOAD_DIR) + "/clone_exec", "3",
       "/busybox", "sh", "-c",
       "echo \"$CLONE_ID: $(seq $((CLONE_ID * 10)) | sort -rn | head -1)\"; exit $CLONE_ID"});
  ASSERT_TRUE(r.exited) << r.Describe();
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
  std::vector<std::string> lines = Lines(r.out);
  std::sort(lines.begin(), lines.end());
  EXPECT_EQ(lines,
            (std::vector<std::string>{"[clone 1] 1: 10", "[clone 2] 2: 20", "[clone 3] 3: 30",
                                      "clone 1: kind 1 status 1", "clone 2: kind 1 status 2",
                                      "clone 3: kind 1 status 3"}))
      << r.Describe();
}

}  // namespace
