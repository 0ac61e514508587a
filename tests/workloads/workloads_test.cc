// The workload suite (README.md): each program's output, exit status and the files it writes
// are the same in flurry as natively; and run under sf_clone, its clones' results are right.
#include <gtest/gtest.h>

#include <cstdint>

#include "harness.h"

namespace {
using namespace flurry_test;

std::string Workload(const std::string& name) { return std::string(WORKLOAD_DIR) + "/" + name; }

// The input data: a few MiB of word salad (compressible, as text is) and of binary records.
void WriteInputs(const fs::path& dir) {
  static const char* const kWords[] = {"flurry", "clone",  "page", "memory", "fork",   "the",
                                       "of",     "vm",     "and",  "host",   "signal", "a",
                                       "zstd",   "buffer", "to",   "guest",  "kvm",    "stub"};
  uint64_t state = 42;
  auto next = [&] {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return state >> 33;
  };
  std::string text;
  while (text.size() < (3u << 20)) {
    text += kWords[next() % std::size(kWords)];
    text += next() % 11 == 0 ? "\n" : " ";
  }
  WriteFile(dir / "corpus.txt", text);
  std::string records;
  for (uint32_t i = 0; records.size() < (1u << 20); ++i) {
    const uint32_t record[4] = {i, i * 7, static_cast<uint32_t>(next() % 1000), 0xfeedu};
    records.append(reinterpret_cast<const char*>(record), sizeof record);
  }
  WriteFile(dir / "records.bin", records);
}

// Both runs get the same inputs, each in its own directory; the native run happens first.
class ZstdWorkload : public ::testing::Test {
 protected:
  void SetUp() override {
    WriteInputs(native_dir_.path());
    WriteInputs(guest_dir_.path());
    native_ = flurry_test::Run({Workload("zstd_dir"), native_dir_.path().string()});
    ASSERT_TRUE(native_.exited && native_.exit_code == 0) << native_.Describe();
  }
  RunResult RunInFlurry(std::vector<std::string> args) {
    std::vector<std::string> all = {"run", "--dir", guest_dir_.path().string() + ":rw",
                                    Workload("zstd_dir"), "/"};
    all.insert(all.end(), args.begin(), args.end());
    return Flurry(all);
  }

  TempDir native_dir_, guest_dir_;
  RunResult native_;
};

TEST_F(ZstdWorkload, CompressesTheDirectoryAsNatively) {
  RunResult guest = RunInFlurry({});
  ASSERT_TRUE(guest.exited) << guest.Describe();
  EXPECT_EQ(guest.exit_code, 0) << guest.Describe();
  EXPECT_EQ(guest.out, native_.out) << guest.Describe();
  EXPECT_EQ(guest.err, "") << guest.Describe();
  EXPECT_EQ(Lines(native_.out).size(), 2u) << native_.Describe();
  for (const char* name : {"corpus.txt.zst", "records.bin.zst"}) {
    const std::string expected = ReadFile(native_dir_.path() / name);
    EXPECT_FALSE(expected.empty()) << name;
    EXPECT_TRUE(ReadFile(guest_dir_.path() / name) == expected) << name << " differs";
  }
}

TEST_F(ZstdWorkload, ClonesCompressAtTheirOwnLevels) {
  RunResult guest = RunInFlurry({"3"});
  ASSERT_TRUE(guest.exited) << guest.Describe();
  EXPECT_EQ(guest.exit_code, 0) << guest.Describe();
  EXPECT_EQ(guest.err, "") << guest.Describe();
  const std::vector<std::string> lines = Lines(guest.out);
  ASSERT_EQ(lines.size(), 5u) << guest.Describe();
  EXPECT_EQ(lines[0] + "\n" + lines[1] + "\n", native_.out) << guest.Describe();
  for (int id = 1; id <= 3; ++id) {
    const std::string& line = lines[static_cast<size_t>(1 + id)];
    EXPECT_TRUE(
        StartsWith(line, "clone " + std::to_string(id) + " (level " + std::to_string(id) + "): "))
        << line;
    EXPECT_NE(line.find("matches the parent's own: yes"), std::string::npos) << line;
  }
}

// The C++ standard library's threads (cxx_threads.cc): the same output as natively.
TEST(CxxThreadsWorkload, RunsAsNatively) {
  ExpectSameAsNative({Workload("cxx_threads")}, "flurry: guest killed by SIG");
}

// Under sf_clone the worker pool's threads are cloned with the VM: each clone runs the job on
// its own numbers, and the parent finds the same results computing them itself.
TEST(CxxThreadsWorkload, ClonesRunTheJobWithTheirClonedPool) {
  RunResult guest = Flurry({"run", Workload("cxx_threads"), "3"});
  ASSERT_TRUE(guest.exited) << guest.Describe();
  EXPECT_EQ(guest.exit_code, 0) << guest.Describe();
  EXPECT_EQ(guest.err, "") << guest.Describe();
  const std::vector<std::string> lines = Lines(guest.out);
  ASSERT_EQ(lines.size(), 4u) << guest.Describe();
  EXPECT_TRUE(StartsWith(lines[0], "parent base 0: primes ")) << guest.Describe();
  for (int id = 1; id <= 3; ++id) {
    EXPECT_EQ(lines[static_cast<size_t>(id)], "clone " + std::to_string(id) +
                                                  ": matches the parent's computation of base " +
                                                  std::to_string(id * 100000) + ": yes")
        << guest.Describe();
  }
}

}  // namespace
