#include "fork/clone_allocator.h"

#include <gtest/gtest.h>

#include <map>

namespace flurry {
namespace {

std::map<std::string, int> Count(const std::vector<std::string>& hosts) {
  std::map<std::string, int> count;
  for (const auto& h : hosts) ++count[h];
  return count;
}

TEST(ClusterFileAllocator, SpreadsOverHostsBySlots) {
  ClusterFileAllocator allocator({{"host1", 8}, {"host2", 8}, {"host3", 8}, {"host4", 8}});
  auto hosts = allocator.Allocate(8);
  ASSERT_EQ(hosts.size(), 8u);
  EXPECT_EQ(Count(hosts),
            (std::map<std::string, int>{{"host1", 2}, {"host2", 2}, {"host3", 2}, {"host4", 2}}));
  EXPECT_EQ(allocator.free_slots("host1"), 6);
}

TEST(ClusterFileAllocator, GrantsNoMoreThanFreeSlots) {
  ClusterFileAllocator allocator({{"a", 2}, {"b", 1}});
  auto first = allocator.Allocate(5);
  ASSERT_EQ(first.size(), 3u);  // m <= n
  EXPECT_EQ(Count(first), (std::map<std::string, int>{{"a", 2}, {"b", 1}}));
  EXPECT_TRUE(allocator.Allocate(1).empty());
  allocator.Release({"b"});
  EXPECT_EQ(allocator.Allocate(4), std::vector<std::string>{"b"});
  allocator.Release(first);
  allocator.Release({"b", "unknown"});  // more than reserved, or unknown hosts: ignored
  EXPECT_EQ(allocator.free_slots("a"), 2);
  EXPECT_EQ(allocator.free_slots("b"), 1);
}

TEST(ClusterFileAllocator, PrefersTheHostWithMostFreeSlots) {
  ClusterFileAllocator allocator({{"small", 1}, {"big", 4}});
  EXPECT_EQ(allocator.Allocate(3), (std::vector<std::string>{"big", "big", "big"}));
  // Now one free each: ties go to the first in file order.
  EXPECT_EQ(allocator.Allocate(3), (std::vector<std::string>{"small", "big"}));
}

}  // namespace
}  // namespace flurry
