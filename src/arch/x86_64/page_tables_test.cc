#include "arch/x86_64/page_tables.h"

#include <gtest/gtest.h>

#include "arch/x86_64/layout.h"

namespace flurry::x86 {
namespace {

TEST(PageTables, NullPageIsUnmapped) {
  auto mem = GuestMemory::Create(64 << 20).value();
  ASSERT_TRUE(BuildPageTables(mem, {}).has_value());
  EXPECT_FALSE(Translate(mem, 0).has_value());
  EXPECT_FALSE(Translate(mem, 0xfff).has_value());
}

TEST(PageTables, SystemAreaIsSupervisorOnly) {
  auto mem = GuestMemory::Create(64 << 20).value();
  ASSERT_TRUE(BuildPageTables(mem, {}).has_value());
  for (uint64_t va : {kGdtAddr, kIdtAddr, kTssAddr, kExceptionStubsAddr, kKernelStackBottom}) {
    auto t = Translate(mem, va);
    ASSERT_TRUE(t.has_value()) << std::hex << va;
    EXPECT_FALSE(t->user) << std::hex << va;
    EXPECT_EQ(t->physical, va);
    EXPECT_EQ(t->page_size, kPageSize);
  }
  // The page tables themselves are not mapped at all.
  EXPECT_FALSE(Translate(mem, kPageTablesAddr).has_value());
}

TEST(PageTables, GateVvarAndDoorbellAreUserPages) {
  auto mem = GuestMemory::Create(64 << 20).value();
  ASSERT_TRUE(BuildPageTables(mem, {}).has_value());
  auto gate = Translate(mem, kSyscallGateAddr);
  ASSERT_TRUE(gate.has_value());
  EXPECT_TRUE(gate->user);
  EXPECT_FALSE(gate->writable);
  auto doorbell = Translate(mem, kDoorbellAddr);
  ASSERT_TRUE(doorbell.has_value());
  EXPECT_EQ(doorbell->physical, kDoorbellGpa);
  EXPECT_TRUE(doorbell->writable);
}

TEST(PageTables, UserRamIsIdentityMappedWithHugePages) {
  auto mem = GuestMemory::Create(64 << 20).value();
  ASSERT_TRUE(BuildPageTables(mem, {}).has_value());
  for (uint64_t va : {kUserBase, kUserBase + 12345, uint64_t{(64ULL << 20) - 1}}) {
    auto t = Translate(mem, va);
    ASSERT_TRUE(t.has_value()) << std::hex << va;
    EXPECT_EQ(t->physical, va);
    EXPECT_TRUE(t->user);
    EXPECT_TRUE(t->writable);
    EXPECT_EQ(t->page_size, kHugePageSize);
  }
  EXPECT_FALSE(Translate(mem, 64ULL << 20).has_value());  // beyond RAM
}

TEST(PageTables, HolesStayUnmapped) {
  auto mem = GuestMemory::Create(64 << 20).value();
  AddressRange hole{16 << 20, 2 << 20};
  ASSERT_TRUE(BuildPageTables(mem, {&hole, 1}).has_value());
  EXPECT_FALSE(Translate(mem, (16 << 20) + 100).has_value());
  EXPECT_TRUE(Translate(mem, (18 << 20)).has_value());
}

TEST(PageTables, LargeMemorySpansSeveralDirectories) {
  auto mem = GuestMemory::Create(5ULL << 30).value();
  ASSERT_TRUE(BuildPageTables(mem, {}).has_value());
  auto t = Translate(mem, (4ULL << 30) + 0x123456);
  ASSERT_TRUE(t.has_value());
  EXPECT_EQ(t->physical, (4ULL << 30) + 0x123456);
  EXPECT_FALSE(Translate(mem, 5ULL << 30).has_value());
}

TEST(PageTables, RejectsBadSizes) {
  auto small = GuestMemory::Create(2 << 20).value();
  EXPECT_FALSE(BuildPageTables(small, {}).has_value());
}

}  // namespace
}  // namespace flurry::x86
