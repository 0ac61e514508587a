#include "fork/clone_allocator.h"

#include <gtest/gtest.h>

#include <map>

namespace flurry {
namespace {

constexpr uint64_t kGiB = 1ULL << 30;
constexpr uint64_t kCloneBytes = 512ULL << 20;

std::map<std::string, int> Count(const std::vector<std::string>& hosts) {
  std::map<std::string, int> count;
  for (const auto& h : hosts) ++count[h];
  return count;
}

HostReport Up(const std::string& name, int32_t slots, int32_t running,
              uint64_t free_memory = 64 * kGiB) {
  HostReport report;
  report.name = name;
  report.up = true;
  report.slots = slots;
  report.running_clones = running;
  report.memory_bytes = 64 * kGiB;
  report.free_memory_bytes = free_memory;
  return report;
}

HostReport Down(const std::string& name) {
  HostReport report;
  report.name = name;
  report.why_down = "failed to connect to all addresses";
  return report;
}

// What the daemons say, set by each test; owned by the allocator, changed through `fake`.
class FakeStatus : public HostStatusSource {
 public:
  Result<std::vector<HostReport>> Query() override {
    ++queries;
    if (!error.empty()) return Fail("{}", error);
    return reports;
  }
  std::vector<HostReport> reports;
  std::string error;
  int queries = 0;
};

struct Fixture {
  explicit Fixture(std::vector<ClusterFileAllocator::Host> hosts,
                   uint64_t clone_bytes = kCloneBytes) {
    auto source = std::make_unique<FakeStatus>();
    fake = source.get();
    allocator =
        std::make_unique<ClusterFileAllocator>(std::move(hosts), std::move(source), clone_bytes);
  }
  FakeStatus* fake = nullptr;
  std::unique_ptr<ClusterFileAllocator> allocator;
};

TEST(ClusterFileAllocator, SpreadsOverIdleHostsBySlotsAndAsksTheDaemonsEachTime) {
  Fixture f({{"host1", 8}, {"host2", 8}, {"host3", 8}, {"host4", 8}});
  f.fake->reports = {Up("host1", 8, 0), Up("host2", 8, 0), Up("host3", 8, 0), Up("host4", 8, 0)};
  auto hosts = f.allocator->Allocate(8);
  ASSERT_EQ(hosts.size(), 8u);
  EXPECT_EQ(Count(hosts),
            (std::map<std::string, int>{{"host1", 2}, {"host2", 2}, {"host3", 2}, {"host4", 2}}));
  EXPECT_EQ(f.allocator->reserved("host1"), 2);
  EXPECT_EQ(f.fake->queries, 1);
  f.allocator->Allocate(1);
  EXPECT_EQ(f.fake->queries, 2);
}

// AllocateAsking: the source it is given (the VM's spare stand-in) answers in place of the
// allocator's own; when that one cannot ask, the allocator asks its own way.
TEST(ClusterFileAllocator, AsksTheGivenSourceFirstAndItsOwnWhenThatFails) {
  Fixture f({{"host1", 8}, {"host2", 8}});
  f.fake->reports = {Down("host1"), Up("host2", 8, 0)};
  FakeStatus spare;
  spare.reports = {Up("host1", 8, 0), Down("host2")};
  EXPECT_EQ(Count(f.allocator->AllocateAsking(3, spare)),
            (std::map<std::string, int>{{"host1", 3}}));
  EXPECT_EQ(spare.queries, 1);
  EXPECT_EQ(f.fake->queries, 0);
  spare.error = "the spare stand-in is gone";
  EXPECT_EQ(Count(f.allocator->AllocateAsking(2, spare)),
            (std::map<std::string, int>{{"host2", 2}}));
  EXPECT_EQ(spare.queries, 2);
  EXPECT_EQ(f.fake->queries, 1);
}

TEST(ClusterFileAllocator, RespectsLiveSlotsUsedByAnotherFamily) {
  Fixture f({{"a", 8}, {"b", 8}});
  // Another VM's clones fill 6 of a's slots: a has room for 2, b for 8.
  f.fake->reports = {Up("a", 8, 6), Up("b", 8, 0)};
  auto hosts = f.allocator->Allocate(8);
  // b until it is down to a's 2 free; the tie goes to a (file order), then b again.
  EXPECT_EQ(Count(hosts), (std::map<std::string, int>{{"a", 1}, {"b", 7}}));
  // Only 2 slots are left in the cluster (a: 1, b: 1).
  EXPECT_EQ(Count(f.allocator->Allocate(5)), (std::map<std::string, int>{{"a", 1}, {"b", 1}}));
  EXPECT_TRUE(f.allocator->Allocate(1).empty());
  // A full host gets nothing, whatever this VM holds.
  f.fake->reports = {Up("a", 8, 8), Up("b", 8, 8)};
  f.allocator->Release({"a", "a", "b"});
  EXPECT_TRUE(f.allocator->Allocate(3).empty());
}

TEST(ClusterFileAllocator, CountsReservedClonesUntilStartedThenOnlyTheHostsCount) {
  Fixture f({{"a", 4}});
  f.fake->reports = {Up("a", 4, 0)};
  auto first = f.allocator->Allocate(3);
  ASSERT_EQ(first.size(), 3u);
  // Not started yet: the daemon does not count them, this VM does.
  EXPECT_EQ(f.allocator->Allocate(4), std::vector<std::string>{"a"});
  // The first 3 start (the ForkController releases them at sf_clone); the daemon runs them.
  f.allocator->Release(first);
  f.fake->reports = {Up("a", 4, 3)};
  EXPECT_EQ(f.allocator->reserved("a"), 1);
  EXPECT_TRUE(f.allocator->Allocate(1).empty());  // 3 running + 1 reserved: full, not 3 + 3 + 1
  // They end: room again.
  f.fake->reports = {Up("a", 4, 0)};
  EXPECT_EQ(f.allocator->Allocate(4), (std::vector<std::string>{"a", "a", "a"}));
}

TEST(ClusterFileAllocator, SkipsAHostThatDoesNotAnswer) {
  Fixture f({{"host1", 8}, {"host2", 8}, {"host3", 8}});
  f.fake->reports = {Up("host1", 8, 0), Down("host2")};  // host3: no line at all
  auto hosts = f.allocator->Allocate(6);
  EXPECT_EQ(Count(hosts), (std::map<std::string, int>{{"host1", 6}}));
  EXPECT_EQ(f.allocator->reserved("host2"), 0);
  // It is back: it gets clones again.
  f.fake->reports = {Up("host1", 8, 0), Up("host2", 8, 0), Up("host3", 8, 0)};
  EXPECT_EQ(Count(f.allocator->Allocate(4)),
            (std::map<std::string, int>{{"host2", 2}, {"host3", 2}}));
}

TEST(ClusterFileAllocator, GivesAHostNoMoreClonesThanItsFreeMemoryHolds) {
  Fixture f({{"small", 8}, {"big", 8}});
  // small's free memory holds 2 clones and a half; big's plenty.
  f.fake->reports = {Up("small", 8, 0, 2 * kCloneBytes + kCloneBytes / 2), Up("big", 8, 0)};
  EXPECT_EQ(Count(f.allocator->Allocate(16)),
            (std::map<std::string, int>{{"small", 2}, {"big", 8}}));
  // Reserved clones use no memory there yet: they still count against it.
  f.allocator->Release({"small"});
  EXPECT_EQ(f.allocator->Allocate(4), std::vector<std::string>{"small"});
  // A host whose free memory does not hold one clone gets none, free slots or not.
  Fixture g({{"a", 8}, {"b", 8}});
  g.fake->reports = {Up("a", 8, 0, kCloneBytes - 1), Up("b", 8, 7)};
  EXPECT_EQ(g.allocator->Allocate(3), std::vector<std::string>{"b"});
}

TEST(ClusterFileAllocator, GrantsNothingWhenNoHostAnswers) {
  Fixture f({{"a", 8}, {"b", 8}});
  f.fake->reports = {Down("a"), Down("b")};
  EXPECT_TRUE(f.allocator->Allocate(4).empty());
  f.fake->reports = {};
  EXPECT_TRUE(f.allocator->Allocate(4).empty());
  // It could not ask at all.
  f.fake->error = "starting flurry-remote: No such file or directory";
  f.fake->reports = {Up("a", 8, 0), Up("b", 8, 0)};
  EXPECT_TRUE(f.allocator->Allocate(4).empty());
  EXPECT_EQ(f.allocator->reserved("a") + f.allocator->reserved("b"), 0);
}

TEST(ClusterFileAllocator, TheFileCapsSlotsAndOddNumbersFromADaemonGrantNothingExtra) {
  Fixture f({{"a", 2}, {"b", 8}, {"c", 8}, {"d", 8}});
  f.fake->reports = {Up("a", 4096, 0), Up("b", -5, 0),  // nonsense slots: none
                     Up("c", 8, -100),                  // negative running: as 0
                     Up("d", 2147483647, 2147483647)};  // no overflow
  EXPECT_EQ(Count(f.allocator->Allocate(100)), (std::map<std::string, int>{{"a", 2}, {"c", 8}}));
  // Reports for hosts not in the file, and a second report for a host, are ignored.
  Fixture g({{"a", 1}});
  g.fake->reports = {Up("x", 8, 0), Down("a"), Up("a", 8, 0)};
  EXPECT_TRUE(g.allocator->Allocate(1).empty());
}

TEST(ClusterFileAllocator, ReleaseIgnoresUnknownHostsAndMoreThanReserved) {
  Fixture f({{"a", 2}, {"b", 1}});
  f.fake->reports = {Up("a", 2, 0), Up("b", 1, 0)};
  auto first = f.allocator->Allocate(5);
  ASSERT_EQ(first.size(), 3u);  // m <= n
  f.allocator->Release(first);
  f.allocator->Release({"b", "unknown"});
  EXPECT_EQ(f.allocator->reserved("a"), 0);
  EXPECT_EQ(f.allocator->reserved("b"), 0);
  EXPECT_EQ(f.allocator->Allocate(3).size(), 3u);
}

}  // namespace
}  // namespace flurry
