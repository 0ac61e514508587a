#include "memory/guest_memory.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "arch/x86_64/layout.h"

namespace flurry {
namespace {

TEST(GuestMemory, RejectsUnalignedSize) { EXPECT_FALSE(GuestMemory::Create(3 << 20).has_value()); }

TEST(GuestMemory, ChecksUserRanges) {
  auto mem = GuestMemory::Create(16 << 20).value();
  EXPECT_TRUE(mem.CheckUser(x86::kUserBase, 4096).has_value());
  EXPECT_TRUE(mem.CheckUser(mem.size(), 0).has_value());
  EXPECT_EQ(mem.CheckUser(0, 1).error().code(), EFAULT);                   // NULL page
  EXPECT_EQ(mem.CheckUser(x86::kGdtAddr, 8).error().code(), EFAULT);       // system area
  EXPECT_EQ(mem.CheckUser(mem.size() - 4, 8).error().code(), EFAULT);      // runs off the end
  EXPECT_EQ(mem.CheckUser(x86::kUserBase, ~0ULL).error().code(), EFAULT);  // overflow
  EXPECT_EQ(mem.CheckUser(~0ULL - 2, 4).error().code(), EFAULT);
}

TEST(GuestMemory, AttachedProtectionsRuleTheProgramsBuffers) {
  auto mem = GuestMemory::Create(16 << 20).value();
  const uint64_t base = 4 << 20;
  ProtectionMap prot;
  prot.Set(base, 4096, kProtReadWrite);
  prot.Set(base + 4096, 4096, kProtRead);
  prot.Set(base + 2 * 4096, 4096, 0);
  mem.AttachProtections(&prot);
  uint64_t value = 7;
  EXPECT_TRUE(mem.Write(base + 8, &value, sizeof value).has_value());
  // A write reaching into the read-only page, a read of the PROT_NONE one, of a hole.
  EXPECT_EQ(mem.Write(base + 4092, &value, sizeof value).error().code(), EFAULT);
  EXPECT_TRUE(mem.Read(base + 4092, &value, sizeof value).has_value());
  EXPECT_EQ(mem.Read(base + 2 * 4096, &value, 1).error().code(), EFAULT);
  EXPECT_EQ(mem.Read(base + 3 * 4096, &value, 1).error().code(), EFAULT);
  EXPECT_EQ(mem.Fill(base + 4096, 0, 1).error().code(), EFAULT);
  EXPECT_EQ(mem.Window(base + 4096, 16, GuestAccess::kWrite).error().code(), EFAULT);
  EXPECT_TRUE(mem.Window(base + 4096, 16, GuestAccess::kRead).has_value());
  EXPECT_TRUE(mem.Window(base + 2 * 4096, 16, GuestAccess::kAsKernel).has_value());
  // A string may end right before a page it cannot read; one running into it faults.
  const char text[] = "ok";
  ASSERT_TRUE(mem.WritePhysical(base + 2 * 4096 - 3, text, 3).has_value());
  EXPECT_EQ(mem.ReadCString(base + 2 * 4096 - 3, 100).value(), "ok");
  ASSERT_TRUE(mem.WritePhysical(base + 2 * 4096 - 2, "xy", 2).has_value());
  EXPECT_EQ(mem.ReadCString(base + 2 * 4096 - 2, 100).error().code(), EFAULT);
  // The VMM's own copies and discards ignore them.
  EXPECT_TRUE(mem.Copy(base + 2 * 4096, base, 64).has_value());
  EXPECT_TRUE(mem.Discard(base + 2 * 4096, 4096).has_value());
  mem.AttachProtections(nullptr);
  EXPECT_TRUE(mem.Read(base + 3 * 4096, &value, 1).has_value());
}

TEST(GuestMemory, ReadsAndWrites) {
  auto mem = GuestMemory::Create(16 << 20).value();
  ASSERT_TRUE(mem.WriteObject<uint64_t>(x86::kUserBase + 8, 0x1122334455667788).has_value());
  EXPECT_EQ(mem.ReadObject<uint64_t>(x86::kUserBase + 8).value(), 0x1122334455667788u);
  EXPECT_FALSE(mem.ReadObject<uint64_t>(8).has_value());
}

TEST(GuestMemory, ReadsCStrings) {
  auto mem = GuestMemory::Create(16 << 20).value();
  const char text[] = "hello";
  ASSERT_TRUE(mem.Write(x86::kUserBase, text, sizeof text).has_value());
  EXPECT_EQ(mem.ReadCString(x86::kUserBase, 100).value(), "hello");
  EXPECT_EQ(mem.ReadCString(x86::kUserBase, 3).error().code(), ENAMETOOLONG);
  // A string that runs to the end of memory without a NUL.
  uint64_t end = mem.size() - 3;
  ASSERT_TRUE(mem.Write(end, "abc", 3).has_value());
  EXPECT_EQ(mem.ReadCString(end, 100).error().code(), EFAULT);
  EXPECT_EQ(mem.ReadCString(0x10, 100).error().code(), EFAULT);
}

TEST(GuestMemory, DiscardZeroesPages) {
  auto mem = GuestMemory::Create(16 << 20).value();
  ASSERT_TRUE(mem.WriteObject<uint32_t>(x86::kUserBase, 42).has_value());
  ASSERT_TRUE(mem.Discard(x86::kUserBase, 4096).has_value());
  EXPECT_EQ(mem.ReadObject<uint32_t>(x86::kUserBase).value(), 0u);
  EXPECT_FALSE(mem.Discard(x86::kUserBase + 1, 4096).has_value());
}

// ---- local memory: populated pages -------------------------------------------------------

constexpr uint64_t kPage = x86::kPageSize;

// True if the page holding `p` is swapped out (/proc/self/pagemap bit 62).
bool SelfPageSwapped(const void* p) {
  UniqueFd pagemap(open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC));
  if (!pagemap.valid()) return false;
  uint64_t entry = 0;
  const off_t offset = static_cast<off_t>(reinterpret_cast<uint64_t>(p) / kPage * 8);
  if (pread(pagemap.get(), &entry, sizeof entry, offset) != sizeof entry) return false;
  return (entry & (1ULL << 62)) != 0;
}

TEST(GuestMemory, LocalPopulatedPagesFollowTouches) {
  auto mem = GuestMemory::Create(16 << 20).value();
  // Touched and untouched pages lie in different 2 MiB ranges: with transparent huge pages
  // one touch may populate its whole 2 MiB.
  const uint64_t touched = (4 << 20) + 3 * kPage;
  const uint64_t untouched = 12 << 20;
  auto before = mem.PopulatedPages().value();
  ASSERT_EQ(before.size(), mem.size() / kPage);
  EXPECT_FALSE(before[touched / kPage]);
  EXPECT_FALSE(before[untouched / kPage]);
  ASSERT_TRUE(mem.WriteObject<uint32_t>(touched, 7).has_value());
  auto after = mem.PopulatedPages().value();
  EXPECT_TRUE(after[touched / kPage]);
  EXPECT_FALSE(after[untouched / kPage]);
  // Discarded: back to never populated.
  ASSERT_TRUE(
      mem.Discard(x86::AlignDown(touched, x86::kHugePageSize), x86::kHugePageSize).has_value());
  EXPECT_FALSE(mem.PopulatedPages().value()[touched / kPage]);
}

TEST(GuestMemory, LocalPageOutKeepsAPagePopulated) {
  auto mem = GuestMemory::Create(16 << 20).value();
  const uint64_t addr = 6 << 20;
  ASSERT_TRUE(mem.WriteObject<uint64_t>(addr, 0xfeedface).has_value());
  uint8_t* host = mem.HostPointer(addr, kPage);
  if (madvise(host, kPage, MADV_PAGEOUT) != 0) {
    GTEST_SKIP() << "MADV_PAGEOUT unsupported: " << std::strerror(errno);
  }
  // A written anonymous page is never dropped: it stays in RAM (no swap, or reclaim declined)
  // or goes to swap. Either way it holds data, and PopulatedPages must say so.
  EXPECT_TRUE(mem.PopulatedPages().value()[addr / kPage])
      << (SelfPageSwapped(host) ? "(swapped out)" : "(still resident)");
  EXPECT_EQ(mem.ReadObject<uint64_t>(addr).value(), 0xfeedfaceu);
}

// ---- remote memory ------------------------------------------------------------------------

// A child process holding anonymous memory at [2 MiB, 16 MiB) of its address space, with a
// one-page hole at kHole, standing in for a seccomp stub.
constexpr uint64_t kRemoteSize = 16 << 20;
constexpr uint64_t kHole = 12 << 20;

std::vector<uint8_t> Pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = static_cast<uint8_t>(seed + i * 7 + (i >> 12));
  return v;
}

class RemoteMemoryTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int ready[2];
    ASSERT_EQ(pipe2(ready, O_CLOEXEC), 0);
    const pid_t parent = getpid();
    child_ = fork();
    ASSERT_GE(child_, 0);
    if (child_ == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(1);
      void* p = mmap(reinterpret_cast<void*>(x86::kUserBase), kRemoteSize - x86::kUserBase,
                     PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE | MAP_NORESERVE, -1, 0);
      char status = p == reinterpret_cast<void*>(x86::kUserBase) ? 'y' : 'n';
      if (status == 'y' && munmap(reinterpret_cast<void*>(kHole), kPage) != 0) status = 'n';
      (void)!write(ready[1], &status, 1);
      for (;;) pause();
    }
    close(ready[1]);
    char status = 0;
    ASSERT_EQ(read(ready[0], &status, 1), 1);
    close(ready[0]);
    ASSERT_EQ(status, 'y') << "the child could not map memory at 2 MiB";
    memory_.emplace(Make(/*with_discard=*/true));
  }

  void TearDown() override {
    memory_.reset();
    KillChild();
  }

  void KillChild() {
    if (child_ > 0) {
      kill(child_, SIGKILL);
      waitpid(child_, nullptr, 0);
      child_ = -1;
    }
  }

  GuestMemory Make(bool with_discard) {
    const std::string proc = "/proc/" + std::to_string(child_) + "/";
    UniqueFd mem(open((proc + "mem").c_str(), O_RDWR | O_CLOEXEC));
    UniqueFd pagemap(open((proc + "pagemap").c_str(), O_RDONLY | O_CLOEXEC));
    EXPECT_TRUE(mem.valid());
    EXPECT_TRUE(pagemap.valid());
    GuestMemory::RemoteDiscard discard;
    if (with_discard) {
      discard = [this](uint64_t addr, uint64_t len) -> Result<void> {
        discards_.emplace_back(addr, len);
        if (discard_error_ != 0) return FailErrno(discard_error_, "test discard");
        return {};
      };
    }
    return GuestMemory::Remote(kRemoteSize, std::move(mem), std::move(pagemap), std::move(discard));
  }

  const GuestMemory& mem() const { return *memory_; }

  std::vector<uint8_t> ReadBack(uint64_t addr, size_t n) {
    std::vector<uint8_t> v(n);
    EXPECT_TRUE(mem().Read(addr, v.data(), n).has_value());
    return v;
  }

  pid_t child_ = -1;
  std::optional<GuestMemory> memory_;
  std::vector<std::pair<uint64_t, uint64_t>> discards_;
  int discard_error_ = 0;
};

TEST_F(RemoteMemoryTest, IsRemote) {
  EXPECT_FALSE(mem().is_local());
  EXPECT_EQ(mem().size(), kRemoteSize);
}

TEST_F(RemoteMemoryTest, ReadsAndWritesTheOtherProcess) {
  ASSERT_TRUE(mem().WriteObject<uint64_t>(x86::kUserBase + 8, 0x1122334455667788).has_value());
  EXPECT_EQ(mem().ReadObject<uint64_t>(x86::kUserBase + 8).value(), 0x1122334455667788u);
  // Larger than the 1 MiB bounce chunk, across many pages.
  const auto data = Pattern((2 << 20) + 123, 5);
  ASSERT_TRUE(mem().Write((3 << 20) + 17, data.data(), data.size()).has_value());
  EXPECT_EQ(ReadBack((3 << 20) + 17, data.size()), data);
  // Checked like local memory: NULL page, system area, past the end, overflow.
  uint64_t v = 0;
  EXPECT_EQ(mem().Read(8, &v, 8).error().code(), EFAULT);
  EXPECT_EQ(mem().Write(x86::kVvarAddr, &v, 8).error().code(), EFAULT);
  EXPECT_EQ(mem().Read(kRemoteSize - 4, &v, 8).error().code(), EFAULT);
  EXPECT_EQ(mem().Read(x86::kUserBase, &v, ~0ULL).error().code(), EFAULT);
  // A page the process does not map: EFAULT, not a crash or a short read.
  EXPECT_EQ(mem().Read(kHole + 8, &v, 8).error().code(), EFAULT);
  EXPECT_EQ(mem().Write(kHole - 4, &v, 8).error().code(), EFAULT);
}

TEST_F(RemoteMemoryTest, Fills) {
  const uint64_t addr = (5 << 20) - 100;
  const uint64_t len = (1 << 20) + 300;  // more than one bounce chunk
  ASSERT_TRUE(mem().Fill(addr - 1, 0x11, len + 2).has_value());
  ASSERT_TRUE(mem().Fill(addr, 0xab, len).has_value());
  const auto got = ReadBack(addr - 1, len + 2);
  EXPECT_EQ(got.front(), 0x11);
  EXPECT_EQ(got.back(), 0x11);
  EXPECT_TRUE(std::all_of(got.begin() + 1, got.end() - 1, [](uint8_t b) { return b == 0xab; }));
  EXPECT_TRUE(mem().Fill(addr, 0, 0).has_value());
  EXPECT_EQ(mem().Fill(kRemoteSize - 2, 1, 4).error().code(), EFAULT);
}

// Remote Copy against std::memmove on a local model of the same bytes.
void ExpectCopyLikeMemmove(const GuestMemory& mem, uint64_t dst, uint64_t src, uint64_t len) {
  const uint64_t lo = std::min(dst, src), hi = std::max(dst, src) + len;
  auto model = Pattern(hi - lo, static_cast<uint8_t>(dst ^ src));
  ASSERT_TRUE(mem.Write(lo, model.data(), model.size()).has_value());
  ASSERT_TRUE(mem.Copy(dst, src, len).has_value());
  std::memmove(model.data() + (dst - lo), model.data() + (src - lo), len);
  std::vector<uint8_t> got(model.size());
  ASSERT_TRUE(mem.Read(lo, got.data(), got.size()).has_value());
  EXPECT_TRUE(got == model) << "Copy(" << dst << ", " << src << ", " << len << ")";
}

TEST_F(RemoteMemoryTest, CopiesOverlappingRangesBothWays) {
  const uint64_t base = 3 << 20;
  ExpectCopyLikeMemmove(mem(), base + 4096, base, 100);  // backwards, small
  ExpectCopyLikeMemmove(mem(), base, base + 10, 5000);   // forwards, small
  ExpectCopyLikeMemmove(mem(), base + 5, base, 5000);    // backwards, overlapping
  // Overlapping by more than the 1 MiB bounce chunk: chunk order matters.
  ExpectCopyLikeMemmove(mem(), base + 4096, base, (5 << 19) + 7);  // backwards
  ExpectCopyLikeMemmove(mem(), base, base + 4096, (5 << 19) + 7);  // forwards
  ExpectCopyLikeMemmove(mem(), base + (3 << 20), base, 1 << 20);   // disjoint
  ASSERT_TRUE(mem().Copy(base, base, 100).has_value());
  EXPECT_EQ(mem().Copy(base, kRemoteSize - 10, 20).error().code(), EFAULT);
  EXPECT_EQ(mem().Copy(kRemoteSize - 10, base, 20).error().code(), EFAULT);
  EXPECT_EQ(mem().Copy(0x1000, base, 20).error().code(), EFAULT);
}

TEST_F(RemoteMemoryTest, ReadsCStrings) {
  // A string across a page boundary.
  const uint64_t at = (4 << 20) - 5;
  const char text[] = "crossing-a-page";
  ASSERT_TRUE(mem().Write(at, text, sizeof text).has_value());
  EXPECT_EQ(mem().ReadCString(at, 100).value(), "crossing-a-page");
  // At most max_len characters before the NUL.
  EXPECT_EQ(mem().ReadCString(at, sizeof text - 1).value(), "crossing-a-page");
  EXPECT_EQ(mem().ReadCString(at, sizeof text - 2).error().code(), ENAMETOOLONG);
  EXPECT_EQ(mem().ReadCString(at, 0).error().code(), ENAMETOOLONG);
  ASSERT_TRUE(mem().WriteObject<char>(at + 100, 0).has_value());
  EXPECT_EQ(mem().ReadCString(at + 100, 0).value(), "");
  // Running off the end of memory without a NUL.
  ASSERT_TRUE(mem().Write(kRemoteSize - 3, "abc", 3).has_value());
  EXPECT_EQ(mem().ReadCString(kRemoteSize - 3, 100).error().code(), EFAULT);
  EXPECT_EQ(mem().ReadCString(kRemoteSize - 3, 2).error().code(), ENAMETOOLONG);
  EXPECT_EQ(mem().ReadCString(kRemoteSize, 100).error().code(), EFAULT);
  EXPECT_EQ(mem().ReadCString(0x10, 100).error().code(), EFAULT);
  // A string that ends just below an unmapped page reads fine; one running into it faults.
  ASSERT_TRUE(mem().Write(kHole - 4, "xyz", 4).has_value());
  EXPECT_EQ(mem().ReadCString(kHole - 4, 4096).value(), "xyz");
  ASSERT_TRUE(mem().Write(kHole - 4, "wxyz", 4).has_value());
  EXPECT_EQ(mem().ReadCString(kHole - 4, 4096).error().code(), EFAULT);
}

TEST_F(RemoteMemoryTest, WindowsBounceThroughTheProcess) {
  const uint64_t addr = (7 << 20) - 10;
  const auto data = Pattern(64, 9);
  ASSERT_TRUE(mem().Write(addr, data.data(), data.size()).has_value());
  auto window = mem().Window(addr, 64, GuestAccess::kWrite).value();
  ASSERT_EQ(window.bytes().size(), 64u);
  ASSERT_TRUE(window.Load().has_value());
  EXPECT_TRUE(std::equal(data.begin(), data.end(), window.bytes().begin()));
  // Store(n) writes back only the first n bytes.
  std::fill(window.bytes().begin(), window.bytes().end(), 0xee);
  ASSERT_TRUE(window.Store(10).has_value());
  auto got = ReadBack(addr, 64);
  EXPECT_TRUE(std::all_of(got.begin(), got.begin() + 10, [](uint8_t b) { return b == 0xee; }));
  EXPECT_TRUE(std::equal(got.begin() + 10, got.end(), data.begin() + 10));
  // Store(0) writes nothing; Store past the window is clamped to it.
  ASSERT_TRUE(mem().Write(addr, data.data(), data.size()).has_value());
  ASSERT_TRUE(window.Store(0).has_value());
  EXPECT_EQ(ReadBack(addr, 64), data);
  ASSERT_TRUE(window.Store(1000).has_value());
  EXPECT_EQ(ReadBack(addr, 64), std::vector<uint8_t>(64, 0xee));
  EXPECT_EQ(ReadBack(addr + 64, 1)[0], 0);
  EXPECT_EQ(mem().Window(0x1000, 4, GuestAccess::kWrite).error().code(), EFAULT);
  EXPECT_EQ(mem().Window(kRemoteSize - 1, 2, GuestAccess::kWrite).error().code(), EFAULT);
}

TEST_F(RemoteMemoryTest, DiscardGoesThroughTheOwner) {
  ASSERT_TRUE(mem().Discard(4 << 20, 2 * kPage).has_value());
  ASSERT_EQ(discards_.size(), 1u);
  EXPECT_EQ(discards_[0], std::make_pair(uint64_t{4 << 20}, 2 * kPage));
  // Checked before the owner hears of it.
  EXPECT_EQ(mem().Discard((4 << 20) + 1, kPage).error().code(), EINVAL);
  EXPECT_EQ(mem().Discard(4 << 20, 100).error().code(), EINVAL);
  EXPECT_EQ(mem().Discard(0, kPage).error().code(), EFAULT);
  EXPECT_EQ(mem().Discard(kRemoteSize, kPage).error().code(), EFAULT);
  EXPECT_TRUE(mem().Discard(4 << 20, 0).has_value());
  EXPECT_EQ(discards_.size(), 1u);
  // The owner's failure is the caller's.
  discard_error_ = ENOMEM;
  EXPECT_EQ(mem().Discard(4 << 20, kPage).error().code(), ENOMEM);
}

TEST_F(RemoteMemoryTest, DiscardWithoutAnOwnerZeroes) {
  GuestMemory plain = Make(/*with_discard=*/false);
  const uint64_t addr = 5 << 20;
  ASSERT_TRUE(plain.Fill(addr - 1, 0x5a, 2 * kPage + 2).has_value());
  ASSERT_TRUE(plain.Discard(addr, 2 * kPage).has_value());
  std::vector<uint8_t> got(2 * kPage + 2);
  ASSERT_TRUE(plain.Read(addr - 1, got.data(), got.size()).has_value());
  EXPECT_EQ(got.front(), 0x5a);
  EXPECT_EQ(got.back(), 0x5a);
  EXPECT_TRUE(std::all_of(got.begin() + 1, got.end() - 1, [](uint8_t b) { return b == 0; }));
  EXPECT_TRUE(discards_.empty());
}

TEST_F(RemoteMemoryTest, PhysicalAccessIsBoundedBySizeOnly) {
  uint64_t v = 0x0102030405060708;
  // The system area is inside [0, size) but this process maps nothing there.
  EXPECT_EQ(mem().WritePhysical(x86::kVvarAddr, &v, 8).error().code(), EFAULT);
  EXPECT_EQ(mem().ReadPhysical(x86::kVvarAddr, &v, 8).error().code(), EFAULT);
  // User memory works physically too.
  ASSERT_TRUE(mem().WritePhysical(kRemoteSize - 8, &v, 8).has_value());
  uint64_t back = 0;
  ASSERT_TRUE(mem().ReadPhysical(kRemoteSize - 8, &back, 8).has_value());
  EXPECT_EQ(back, v);
  EXPECT_EQ(mem().ReadPhysical(kRemoteSize - 4, &back, 8).error().code(), EFAULT);
  EXPECT_EQ(mem().WritePhysical(kRemoteSize, &v, 1).error().code(), EFAULT);
  EXPECT_EQ(mem().ReadPhysical(~0ULL - 3, &back, 8).error().code(), EFAULT);
  EXPECT_TRUE(mem().ReadPhysical(kRemoteSize, &back, 0).has_value());
  EXPECT_TRUE(mem().WritePhysical(0, &v, 0).has_value());
}

TEST_F(RemoteMemoryTest, PopulatedPagesReadTheOtherProcessesPageMap) {
  // Far apart (transparent huge pages populate 2 MiB at a time). Only writes touch pages here:
  // even reading an untouched page would map the shared zero page, which counts as present.
  const uint64_t written = (3 << 20) + 5 * kPage;
  const uint64_t untouched = 9 << 20;
  auto before = mem().PopulatedPages().value();
  ASSERT_EQ(before.size(), kRemoteSize / kPage);
  EXPECT_FALSE(before[written / kPage]);
  ASSERT_TRUE(mem().WriteObject<uint32_t>(written, 1).has_value());
  auto after = mem().PopulatedPages().value();
  EXPECT_TRUE(after[written / kPage]);
  EXPECT_FALSE(after[untouched / kPage]);
  EXPECT_FALSE(after[kHole / kPage]);
  EXPECT_FALSE(after[0]);  // never mapped
}

TEST_F(RemoteMemoryTest, FailsCleanlyOnceTheProcessIsGone) {
  KillChild();
  uint64_t v = 0;
  EXPECT_EQ(mem().Read(x86::kUserBase, &v, 8).error().code(), EFAULT);
  EXPECT_EQ(mem().Write(x86::kUserBase, &v, 8).error().code(), EFAULT);
}

}  // namespace
}  // namespace flurry
