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

TEST(UserPageTables, GiveEachPageItsAccess) {
  auto mem = GuestMemory::Create(64 << 20).value();
  ASSERT_TRUE(BuildPageTables(mem, {}).has_value());
  UserPageTables tables(mem.size());
  const size_t pool = tables.free_tables();
  ASSERT_GT(pool, 100u);

  ProtectionMap prot;
  const uint64_t base = 8 << 20;  // a 2 MiB page of mixed protections
  prot.Set(base, kPageSize, kProtRead | kProtExec);
  prot.Set(base + kPageSize, kPageSize, 0);  // PROT_NONE
  prot.Set(base + 3 * kPageSize, kHugePageSize - 3 * kPageSize, kProtReadWrite);
  prot.Set(12 << 20, kHugePageSize, kProtRead);  // a whole 2 MiB page read-only
  ASSERT_TRUE(tables.Apply(mem, prot, kUserBase, mem.size() - kUserBase).has_value());
  EXPECT_EQ(tables.free_tables(), pool - 1);

  auto code = Translate(mem, base + 5);
  ASSERT_TRUE(code.has_value());
  EXPECT_EQ(code->physical, base + 5);
  EXPECT_EQ(code->page_size, kPageSize);
  EXPECT_TRUE(code->user);
  EXPECT_FALSE(code->writable);
  EXPECT_TRUE(code->executable);
  EXPECT_FALSE(Translate(mem, base + kPageSize).has_value());      // PROT_NONE
  EXPECT_FALSE(Translate(mem, base + 2 * kPageSize).has_value());  // not mapped
  auto data = Translate(mem, base + 3 * kPageSize + 8);
  ASSERT_TRUE(data.has_value());
  EXPECT_TRUE(data->writable);
  EXPECT_FALSE(data->executable);
  auto ro = Translate(mem, (12 << 20) + 100);
  ASSERT_TRUE(ro.has_value());
  EXPECT_EQ(ro->page_size, kHugePageSize);
  EXPECT_FALSE(ro->writable);
  EXPECT_FALSE(ro->executable);
  EXPECT_FALSE(Translate(mem, 20 << 20).has_value());  // unmapped 2 MiB pages have no entry

  // The 2 MiB page agreeing again gets one large entry; its table is retired (a running vCPU
  // may still walk it), then goes back to the pool.
  prot.Set(base, kHugePageSize, kProtReadWrite);
  ASSERT_TRUE(tables.Apply(mem, prot, base + kPageSize, kPageSize).has_value());
  EXPECT_EQ(tables.free_tables(), pool - 1);
  EXPECT_EQ(tables.retired_tables(), 1u);
  // A retired table is not handed out again: another mixed 2 MiB page gets a table of its own.
  prot.Set(16 << 20, kPageSize, kProtRead);
  ASSERT_TRUE(tables.Apply(mem, prot, 16 << 20, kPageSize).has_value());
  EXPECT_EQ(tables.free_tables(), pool - 2);
  tables.ReuseRetired();
  EXPECT_EQ(tables.free_tables(), pool - 1);
  EXPECT_EQ(tables.retired_tables(), 0u);
  auto joined = Translate(mem, base + kPageSize);
  ASSERT_TRUE(joined.has_value());
  EXPECT_EQ(joined->page_size, kHugePageSize);
  EXPECT_TRUE(joined->writable);
}

TEST(UserPageTables, RunOutOfTablesWithENOMEM) {
  auto mem = GuestMemory::Create(2ULL << 30).value();
  ASSERT_TRUE(BuildPageTables(mem, {}).has_value());
  UserPageTables tables(mem.size());
  ProtectionMap prot;
  // One mixed 2 MiB page more than the pool has tables.
  for (uint64_t i = 0; i <= tables.free_tables(); ++i) {
    prot.Set(kUserBase + i * kHugePageSize, kPageSize, kProtRead);
  }
  auto applied = tables.Apply(mem, prot, kUserBase, mem.size() - kUserBase);
  ASSERT_FALSE(applied.has_value());
  EXPECT_EQ(applied.error().code(), ENOMEM);
  EXPECT_EQ(tables.free_tables(), 0u);
}

}  // namespace
}  // namespace flurry::x86
