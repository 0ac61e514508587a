// End-to-end tests of snapshots taken through the control socket (`flurry ctl SOCKET
// snapshot DIR`) and of `flurry restore DIR`: the restored guest finishes as an uninterrupted
// run would, threads included; damaged snapshots are refused. Split from ctl_test.cc (same
// binary). Guests: tests/guest/ctl_*.c.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <vector>

#include "ctl_support.h"
#include "harness.h"

namespace {

using namespace flurry_test;

// ctl_compute's arguments: 10 steps of ~0.2 s each here; a 16 MiB working array.
const std::vector<std::string> kComputeArgs = {"20000000", "16"};

// The output of an uninterrupted run of ctl_compute.
const std::string& ReferenceComputeOutput() {
  static const std::string reference = [] {
    std::vector<std::string> args = {"run", Guest("ctl_compute")};
    args.insert(args.end(), kComputeArgs.begin(), kComputeArgs.end());
    auto r = Flurry(args, WithDeadline(120));
    EXPECT_EQ(r.exit_code, 0) << r.Describe();
    EXPECT_EQ(r.err, "") << r.Describe();
    return r.out;
  }();
  return reference;
}

// Runs ctl_compute with --api, snapshots it into `snapshot` after "progress 1/10", and checks
// that the original run was not disturbed. Returns the ctl output.
RunResult SnapshotComputeMidLoop(const std::string& socket, const fs::path& snapshot) {
  std::vector<std::string> args = {"run", "--api", socket, Guest("ctl_compute")};
  args.insert(args.end(), kComputeArgs.begin(), kComputeArgs.end());
  Background vm(args);
  EXPECT_TRUE(vm.WaitForLine("progress 1/10")) << vm.out() << vm.err();
  auto ctl = Ctl(socket, {"snapshot", snapshot.string()});
  auto r = vm.Wait(120s);
  ExpectCleanExit(r, 0);
  EXPECT_EQ(r.out, ReferenceComputeOutput())
      << "the snapshot disturbed the running VM" << r.Describe();
  return ctl;
}

TEST(CtlSnapshot, RestoreFinishesWithTheSameOutputAsAnUninterruptedRun) {
  const std::string reference = ReferenceComputeOutput();
  ASSERT_TRUE(StartsWith(reference, "started\nprogress 0/10\n")) << reference;
  ASSERT_NE(reference.find("\nchecksum="), std::string::npos) << reference;

  TempDir dir;
  const std::string socket = (dir.path() / "api.sock").string();
  const fs::path snapshot = dir.path() / "snap";
  auto ctl = SnapshotComputeMidLoop(socket, snapshot);
  ExpectCtlOk(ctl);
  EXPECT_EQ(Field(ctl.out, "snapshot"), snapshot.string()) << ctl.Describe();
  EXPECT_EQ(Field(ctl.out, "state"), "running") << ctl.Describe();

  // The directory: a descriptor and a sparse memory image of the guest's RAM size.
  const fs::path descriptor = snapshot / "descriptor.fvd";
  const fs::path memory = snapshot / "memory.img";
  struct stat d {
  }, m{};
  ASSERT_EQ(stat(descriptor.c_str(), &d), 0) << ctl.Describe();
  ASSERT_EQ(stat(memory.c_str(), &m), 0) << ctl.Describe();
  EXPECT_GT(d.st_size, 0);
  EXPECT_NE(ctl.out.find("(" + std::to_string(d.st_size) + " bytes)"), std::string::npos)
      << "ctl reports the descriptor's size" << ctl.Describe();
  constexpr uint64_t kRam = 512ULL << 20;
  EXPECT_EQ(static_cast<uint64_t>(m.st_size), kRam);
  const uint64_t allocated = static_cast<uint64_t>(m.st_blocks) * 512;
  EXPECT_GE(allocated, 16ULL << 20) << "the 16 MiB working array must be in the image";
  EXPECT_LT(allocated, kRam / 8) << "memory.img is not sparse: " << allocated << " bytes allocated";

  // flurry descriptor show reads it.
  auto show = Flurry({"descriptor", "show", descriptor.string()});
  EXPECT_EQ(show.exit_code, 0) << show.Describe();
  EXPECT_NE(show.out.find("512 MiB"), std::string::npos) << show.Describe();

  // Restored, the guest finishes the loop: its output is the rest of the reference output.
  for (int round = 0; round < 2; ++round) {  // a snapshot can be restored more than once
    auto r = Flurry({"restore", snapshot.string()}, WithDeadline(120));
    ExpectCleanExit(r, 0);
    ASSERT_FALSE(r.out.empty()) << r.Describe();
    EXPECT_TRUE(reference.ends_with(r.out)) << "not the rest of the reference run:\n"
                                            << reference << r.Describe();
    EXPECT_LT(r.out.size(), reference.size() - std::string("started\nprogress 0/10\n").size())
        << "the snapshot was not taken mid-loop" << r.Describe();
    EXPECT_TRUE(StartsWith(r.out, "progress ") || StartsWith(r.out, "checksum=")) << r.Describe();
    EXPECT_EQ(r.out.find("progress 1/10"), std::string::npos) << r.Describe();
    EXPECT_TRUE(r.out.ends_with(reference.substr(reference.rfind("checksum=")))) << r.Describe();
  }
}

// A snapshot of a VM whose two threads both wait (one in pthread_join, one in nanosleep),
// taken while it is paused, carries both: restored, the loop thread finishes and the first
// thread's join returns.
TEST(CtlSnapshot, ThreadsAreSnapshottedAndRestored) {
  TempDir dir;
  const std::string socket = (dir.path() / "api.sock").string();
  const fs::path snapshot = dir.path() / "snap";
  Background vm({"run", "--api", socket, Guest("ctl_clone_loop"), "30", "50", "threaded"});
  ASSERT_TRUE(vm.WaitForLine("id=0 iter=5")) << vm.out() << vm.err();
  // Paused first: the snapshot is served while paused, most likely with both threads waiting.
  ExpectCtlOk(Ctl(socket, {"pause"}));
  auto ctl = Ctl(socket, {"snapshot", snapshot.string()});
  ExpectCtlOk(ctl);
  ExpectCtlOk(Ctl(socket, {"resume"}));
  ExpectCleanExit(vm.Wait(60s), 0);

  auto show = Flurry({"descriptor", "show", (snapshot / "descriptor.fvd").string()});
  EXPECT_EQ(show.exit_code, 0) << show.Describe();
  EXPECT_NE(show.out.find("threads     2: the one above and, runnable:"), std::string::npos)
      << show.Describe();

  auto r = Flurry({"restore", snapshot.string()}, WithDeadline(120));
  ExpectCleanExit(r, 0);
  const auto lines = Lines(r.out);
  ASSERT_GE(lines.size(), 2u) << r.Describe();
  ASSERT_TRUE(StartsWith(lines[0], "id=0 iter=")) << r.Describe();
  const int first = std::atoi(lines[0].c_str() + 10);
  EXPECT_GE(first, 5) << r.Describe();
  std::vector<std::string> want;
  for (int i = first; i < 30; ++i) want.push_back("id=0 iter=" + std::to_string(i));
  want.push_back("id=0 done");
  EXPECT_EQ(lines, want) << r.Describe();
}

// A pipe's unread bytes are in the snapshot, and its restored ends are connected: the
// restored guest reads what it wrote before the snapshot and what it writes after.
TEST(CtlSnapshot, PipesAreSnapshottedWithTheirBytes) {
  TempDir dir;
  const std::string socket = (dir.path() / "api.sock").string();
  const fs::path snapshot = dir.path() / "snap";
  Background vm({"run", "--api", socket, Guest("ctl_clone_loop"), "20", "40", "piped"});
  ASSERT_TRUE(vm.WaitForLine("id=0 iter=3")) << vm.out() << vm.err();
  ExpectCtlOk(Ctl(socket, {"snapshot", snapshot.string()}));
  auto original = vm.Wait(60s);
  ExpectCleanExit(original, 0);
  EXPECT_TRUE(original.out.ends_with("id=0 done\npipe: carried and more\n")) << original.Describe();

  auto show = Flurry({"descriptor", "show", (snapshot / "descriptor.fvd").string()});
  EXPECT_EQ(show.exit_code, 0) << show.Describe();
  EXPECT_NE(show.out.find(": 7 bytes unread, capacity "), std::string::npos) << show.Describe();

  auto r = Flurry({"restore", snapshot.string()}, WithDeadline(120));
  ExpectCleanExit(r, 0);
  EXPECT_TRUE(r.out.ends_with("id=0 done\npipe: carried and more\n")) << r.Describe();
  EXPECT_EQ(r.out.find("id=0 iter=0\n"), std::string::npos) << r.Describe();
}

// The directories of a snapshot's other processes (process-PID).
std::vector<fs::path> ProcessDirectories(const fs::path& snapshot) {
  std::vector<fs::path> found;
  for (const auto& entry : fs::directory_iterator(snapshot)) {
    if (entry.is_directory() && StartsWith(entry.path().filename().string(), "process-")) {
      found.push_back(entry.path());
    }
  }
  return found;
}

// A snapshot of a VM of several processes holds all of them at one instant: init waiting in
// waitpid, a child in its loop, a zombie child, and the bytes in a pipe between them.
// Restored (twice), the child finishes its loop and reads the pipe to its end (no VMM holds a
// writer the guest closed), init reaps both children: the output is the rest of the original
// run's. A snapshot with a process's memory image
// damaged is refused whole, with a message, and leaves no process behind.
TEST(CtlSnapshot, AVmOfSeveralProcessesIsSnapshottedWhole) {
  TempDir dir;
  const std::string socket = (dir.path() / "api.sock").string();
  const fs::path snapshot = dir.path() / "snap";
  Background vm({"run", "--api", socket, Guest("ctl_clone_loop"), "30", "50", "processes_piped"});
  ASSERT_TRUE(vm.WaitForLine("id=0 iter=5")) << vm.out() << vm.err();
  auto ctl = Ctl(socket, {"snapshot", snapshot.string()});
  ExpectCtlOk(ctl);
  auto original = vm.Wait(60s);
  ExpectCleanExit(original, 0);
  const std::string end = "id=0 iter=29\npipe: carried and more\nzombie: status 7\nid=0 done\n";
  ASSERT_TRUE(original.out.ends_with(end)) << original.Describe();

  // Init's descriptor records the three processes (the zombie with its status) and the pipe's
  // bytes; the looping child has a directory of its own, the zombie none.
  auto show = Flurry({"descriptor", "show", (snapshot / "descriptor.fvd").string()});
  EXPECT_EQ(show.exit_code, 0) << show.Describe();
  EXPECT_NE(show.out.find("processes   3: "), std::string::npos) << show.Describe();
  EXPECT_NE(show.out.find("ended, wait status 0x700"), std::string::npos) << show.Describe();
  EXPECT_NE(show.out.find(": 16 bytes unread, capacity "), std::string::npos) << show.Describe();
  const std::vector<fs::path> others = ProcessDirectories(snapshot);
  ASSERT_EQ(others.size(), 1u) << show.Describe();
  EXPECT_TRUE(fs::exists(others[0] / "descriptor.fvd"));
  EXPECT_TRUE(fs::exists(others[0] / "memory.img"));

  for (int round = 0; round < 2; ++round) {
    auto r = Flurry({"restore", snapshot.string()}, WithDeadline(120));
    ExpectCleanExit(r, 0);
    const auto lines = Lines(r.out);
    ASSERT_GE(lines.size(), 4u) << r.Describe();
    ASSERT_TRUE(StartsWith(lines[0], "id=0 iter=")) << r.Describe();
    const int first = std::atoi(lines[0].c_str() + 10);
    EXPECT_GE(first, 5) << r.Describe();
    std::vector<std::string> want;
    for (int i = first; i < 30; ++i) want.push_back("id=0 iter=" + std::to_string(i));
    for (const char* line : {"pipe: carried and more", "zombie: status 7", "id=0 done"}) {
      want.push_back(line);
    }
    EXPECT_EQ(lines, want) << r.Describe();
  }

  // The child's memory image cut short: nothing runs, the restore says which process, and the
  // VMMs it forked are gone (orphaned, they would come to this process: a subreaper).
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  ASSERT_TRUE(NoChildrenLeft(10s)) << "children before the failing restore";
  fs::resize_file(others[0] / "memory.img", 4096);
  auto r = Flurry({"restore", snapshot.string()}, WithDeadline(60));
  EXPECT_FALSE(r.timed_out) << r.Describe();
  EXPECT_NE(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.out, "") << r.Describe();
  const std::string pid = others[0].filename().string().substr(std::string("process-").size());
  EXPECT_NE(r.err.find("restoring process " + pid), std::string::npos) << r.Describe();
  EXPECT_TRUE(NoChildrenLeft(10s)) << Children().size() << " processes left behind";
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 0), 0);
}

// `serve` of a VM of several processes is refused with the reason (one page server serves one
// process's memory).
TEST(CtlSnapshot, AVmOfSeveralProcessesIsNotServedAndSaysWhy) {
  TempDir dir;
  const std::string socket = (dir.path() / "api.sock").string();
  Background vm({"run", "--api", socket, Guest("ctl_clone_loop"), "30", "50", "processes"});
  ASSERT_TRUE(vm.WaitForLine("id=0 iter=2")) << vm.out() << vm.err();
  auto serve = Ctl(socket, {"serve", "127.0.0.1:0"});
  EXPECT_NE(serve.exit_code, 0) << serve.Describe();
  EXPECT_NE(serve.err.find("more than one process"), std::string::npos) << serve.Describe();
  ExpectCleanExit(vm.Wait(60s), 0);
}

TEST(CtlSnapshot, RelativeDirectoryIsTheCallersAndExistingDirIsReused) {
  TempDir dir;
  const std::string socket = (dir.path() / "api.sock").string();
  Background vm({"run", "--api", socket, Guest("ctl_ticker"), "40", "50"});
  ASSERT_TRUE(vm.WaitForLine("tick 1")) << vm.out() << vm.err();
  fs::create_directory(dir.path() / "existing");
  // `flurry ctl` resolves a relative DIR against its own working directory.
  const fs::path cwd = fs::current_path();
  fs::current_path(dir.path());
  auto r = Ctl(socket, {"snapshot", "existing"});
  fs::current_path(cwd);
  ExpectCtlOk(r);
  EXPECT_TRUE(Exists(dir.path() / "existing" / "descriptor.fvd")) << r.Describe();
  EXPECT_TRUE(Exists(dir.path() / "existing" / "memory.img")) << r.Describe();
  // A directory that cannot be created: an error reply, and the VM runs on.
  auto bad = Ctl(socket, {"snapshot", (dir.path() / "no" / "such" / "parent").string()});
  ExpectInputError(bad);
  ExpectCtlOk(Ctl(socket, {"status"}));
  ExpectCleanExit(vm.Wait(), 0);
}

// A restored VM is clone 0 of a new clone family (its clone IDs are allocated afresh, so they
// could collide with the original family's), serves the API, and can be cloned: the clone
// finishes the computation exactly as the uninterrupted run does.
TEST(RestoreCli, RestoredVmStartsANewFamilyServesTheApiAndClones) {
  ASSERT_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  TempDir dir;
  const std::string socket = (dir.path() / "api.sock").string();
  const fs::path snapshot = dir.path() / "snap";
  std::vector<std::string> args = {"run", "--api", socket, Guest("ctl_compute")};
  args.insert(args.end(), kComputeArgs.begin(), kComputeArgs.end());
  std::string family;
  {
    Background vm(args);
    ASSERT_TRUE(vm.WaitForLine("progress 1/10")) << vm.out() << vm.err();
    auto status = Ctl(socket, {"status"});
    ExpectCtlOk(status);
    family = Field(status.out, "family id").value_or("?");
    ExpectCtlOk(Ctl(socket, {"snapshot", snapshot.string()}));
    ExpectCleanExit(vm.Wait(120s), 0);
  }
  const std::string restored_socket = (dir.path() / "restored.sock").string();
  Background restored({"restore", "--api", restored_socket, snapshot.string()});
  const auto deadline = Clock::now() + 20s;
  while (!Exists(restored_socket) && Clock::now() < deadline) usleep(10000);
  ASSERT_TRUE(Exists(restored_socket)) << restored.out() << restored.err();
  auto status = Ctl(restored_socket, {"status"});
  ExpectCtlOk(status);
  EXPECT_EQ(Field(status.out, "clone id"), "0") << status.Describe();
  ASSERT_TRUE(Field(status.out, "family id")) << status.Describe();
  EXPECT_NE(*Field(status.out, "family id"), family) << status.Describe();
  EXPECT_EQ(Field(status.out, "ram"), "512 MiB (536870912 bytes)") << status.Describe();
  auto clone = Ctl(restored_socket, {"clone", "1"});
  ExpectCtlOk(clone);
  EXPECT_TRUE(StartsWith(Field(clone.out, "clone 1").value_or(""), "pid ")) << clone.Describe();

  auto r = restored.Wait(120s);
  EXPECT_FALSE(r.timed_out) << r.Describe();
  EXPECT_EQ(r.exit_code, 0) << r.Describe();
  EXPECT_EQ(r.err, "") << r.Describe();
  std::string original, cloned;
  for (const auto& line : Lines(r.out)) {
    if (StartsWith(line, "[clone 1] ")) {
      cloned += line.substr(10) + "\n";
    } else {
      original += line + "\n";
    }
  }
  const std::string& reference = ReferenceComputeOutput();
  EXPECT_TRUE(reference.ends_with(original)) << r.Describe();
  EXPECT_FALSE(cloned.empty()) << r.Describe();
  EXPECT_TRUE(reference.ends_with(cloned)) << "the clone computed something else" << r.Describe();
  EXPECT_LE(cloned.size(), original.size()) << r.Describe();
  EXPECT_FALSE(Exists(restored_socket));
}

// A small valid snapshot (of ctl_ticker) to damage.
fs::path MakeTickerSnapshot(const TempDir& dir) {
  const std::string socket = (dir.path() / "api.sock").string();
  const fs::path snapshot = dir.path() / "snap";
  Background vm({"run", "--api", socket, Guest("ctl_ticker"), "20", "20"});
  EXPECT_TRUE(vm.WaitForLine("tick 2")) << vm.out() << vm.err();
  ExpectCtlOk(Ctl(socket, {"snapshot", snapshot.string()}));
  ExpectCleanExit(vm.Wait(), 0);
  return snapshot;
}

void ExpectRestoreRefused(const RunResult& r) {
  ExpectInputError(r);
  EXPECT_NE(r.err.find("flurry: restoring "), std::string::npos) << r.Describe();
}

TEST(RestoreCli, IntactTickerSnapshotRestores) {
  TempDir dir;
  const fs::path snapshot = MakeTickerSnapshot(dir);
  auto r = Flurry({"restore", snapshot.string()});
  ExpectCleanExit(r, 0);
  EXPECT_TRUE(r.out.ends_with("tick 19\ndone\n")) << r.Describe();
  EXPECT_EQ(r.out.find("tick 0\n"), std::string::npos) << r.Describe();
}

TEST(RestoreCli, CorruptedDescriptorIsRefused) {
  TempDir dir;
  const fs::path snapshot = MakeTickerSnapshot(dir);
  const fs::path descriptor = snapshot / "descriptor.fvd";
  const std::string good = ReadFile(descriptor);
  ASSERT_GT(good.size(), 64u);
  // A flipped byte in the header, and one in the payload (the checksum catches it).
  for (size_t offset : {size_t{3}, size_t{12}, good.size() / 2, good.size() - 1}) {
    std::string bad = good;
    bad[offset] = static_cast<char>(bad[offset] ^ 0x40);
    WriteFile(descriptor, bad);
    auto r = Flurry({"restore", snapshot.string()});
    ExpectRestoreRefused(r);
    auto show = Flurry({"descriptor", "show", descriptor.string()});
    ExpectInputError(show);
  }
  WriteFile(descriptor, good);
  ExpectCleanExit(Flurry({"restore", snapshot.string()}), 0);
}

TEST(RestoreCli, TruncatedDescriptorIsRefused) {
  TempDir dir;
  const fs::path snapshot = MakeTickerSnapshot(dir);
  const fs::path descriptor = snapshot / "descriptor.fvd";
  const std::string good = ReadFile(descriptor);
  for (size_t size : {size_t{0}, size_t{16}, size_t{32}, good.size() / 2, good.size() - 1}) {
    WriteFile(descriptor, good.substr(0, size));
    ExpectRestoreRefused(Flurry({"restore", snapshot.string()}));
  }
  WriteFile(descriptor, good + "trailing");
  ExpectRestoreRefused(Flurry({"restore", snapshot.string()}));
}

TEST(RestoreCli, BadMemoryImageIsRefused) {
  TempDir dir;
  const fs::path snapshot = MakeTickerSnapshot(dir);
  const fs::path memory = snapshot / "memory.img";
  struct stat st {};
  ASSERT_EQ(stat(memory.c_str(), &st), 0);
  ASSERT_EQ(truncate(memory.c_str(), st.st_size / 2), 0);
  ExpectRestoreRefused(Flurry({"restore", snapshot.string()}));
  fs::remove(memory);
  ExpectRestoreRefused(Flurry({"restore", snapshot.string()}));
}

TEST(RestoreCli, MissingOrEmptyDirectoryIsRefused) {
  TempDir dir;
  ExpectRestoreRefused(Flurry({"restore", (dir.path() / "missing").string()}));
  ExpectRestoreRefused(Flurry({"restore", dir.path().string()}));
  ExpectUsageError(Flurry({"restore"}));
  ExpectUsageError(Flurry({"restore", "--timeout", "soon", dir.path().string()}));
}

}  // namespace
