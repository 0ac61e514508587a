#include "memory/guest_memory.h"

#include <gtest/gtest.h>

#include "arch/x86_64/layout.h"

namespace flurry {
namespace {

TEST(GuestMemory, RejectsUnalignedSize) { EXPECT_FALSE(GuestMemory::Create(3 << 20).has_value()); }

TEST(GuestMemory, ChecksUserRanges) {
  auto mem = GuestMemory::Create(16 << 20).value();
  EXPECT_TRUE(mem.CheckUser(x86::kUserBase, 4096).has_value());
  EXPECT_TRUE(mem.CheckUser(mem.size(), 0).has_value());
  EXPECT_EQ(mem.CheckUser(0, 1).error().code(), EFAULT);                    // NULL page
  EXPECT_EQ(mem.CheckUser(x86::kGdtAddr, 8).error().code(), EFAULT);        // system area
  EXPECT_EQ(mem.CheckUser(mem.size() - 4, 8).error().code(), EFAULT);       // runs off the end
  EXPECT_EQ(mem.CheckUser(x86::kUserBase, ~0ULL).error().code(), EFAULT);   // overflow
  EXPECT_EQ(mem.CheckUser(~0ULL - 2, 4).error().code(), EFAULT);
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

}  // namespace
}  // namespace flurry
