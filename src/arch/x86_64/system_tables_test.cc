#include "arch/x86_64/system_tables.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstring>

#include "arch/x86_64/layout.h"

namespace flurry::x86 {
namespace {

uint64_t Read64(const GuestMemory& mem, uint64_t gpa) {
  uint64_t v;
  std::memcpy(&v, mem.host_base() + gpa, 8);
  return v;
}

TEST(SystemTables, IdtGatesPointAtStubsThatExitThroughTheirPort) {
  auto mem = GuestMemory::Create(16 << 20).value();
  WriteSystemTables(mem);
  for (int v = 0; v < kExceptionVectors; ++v) {
    uint64_t lo = Read64(mem, kIdtAddr + v * 16), hi = Read64(mem, kIdtAddr + v * 16 + 8);
    uint64_t handler = (lo & 0xffff) | (((lo >> 48) & 0xffff) << 16) | (hi << 32);
    EXPECT_EQ(handler, kExceptionStubsAddr + v * kExceptionStubSize);
    EXPECT_EQ((lo >> 16) & 0xffff, kKernelCodeSelector);
    // Present 64-bit interrupt gates, DPL0 but for int3 and into (DPL3: user code may raise them).
    EXPECT_EQ((lo >> 40) & 0xff, v == 3 || v == 4 ? 0xeeu : 0x8eu) << v;
    EXPECT_EQ((lo >> 32) & 7, v == 8 ? 1u : 0u);
    const uint8_t* stub = mem.host_base() + handler;
    EXPECT_EQ(stub[0], 0xe6);  // out imm8, al
    EXPECT_EQ(stub[1], kExceptionPortBase + v);
  }
  // The iretq the VMM resumes a guest through (vector 0's stub has no error code to drop).
  const uint8_t* iretq = mem.host_base() + IretqRip();
  EXPECT_EQ(iretq[0], 0x48);
  EXPECT_EQ(iretq[1], 0xcf);
}

TEST(SystemTables, TssHasKernelStacks) {
  auto mem = GuestMemory::Create(16 << 20).value();
  WriteSystemTables(mem);
  uint64_t rsp0, ist1;
  std::memcpy(&rsp0, mem.host_base() + kTssAddr + 4, 8);
  std::memcpy(&ist1, mem.host_base() + kTssAddr + 36, 8);
  EXPECT_EQ(rsp0, kKernelStackTop);
  EXPECT_EQ(ist1, kFaultStackTop);
}

TEST(SystemTables, GdtHasUserSegmentsWhereSysretExpectsThem) {
  auto mem = GuestMemory::Create(16 << 20).value();
  WriteSystemTables(mem);
  // SYSRET loads CS from STAR[63:48]+16 and SS from STAR[63:48]+8.
  uint64_t user_cs = Read64(mem, kGdtAddr + (kKernelDataSelector + 16));
  uint64_t user_ss = Read64(mem, kGdtAddr + (kKernelDataSelector + 8));
  EXPECT_EQ((user_cs >> 45) & 3, 3u);  // DPL3
  EXPECT_EQ((user_cs >> 53) & 1, 1u);  // long mode
  EXPECT_EQ((user_ss >> 45) & 3, 3u);
  EXPECT_EQ((user_ss >> 43) & 1, 0u);  // data
}

TEST(SystemTables, GateWritesTheDoorbell) {
  auto mem = GuestMemory::Create(16 << 20).value();
  WriteSystemTables(mem);
  const uint8_t* gate = mem.host_base() + kSyscallGateAddr;
  EXPECT_EQ(gate[0], 0x89);
  uint32_t target;
  std::memcpy(&target, gate + 3, 4);
  EXPECT_EQ(target, kDoorbellAddr);
  EXPECT_EQ(SyscallGateExitRip(), kSyscallGateAddr + 7);
}

TEST(SystemTables, VectorsMapToLinuxSignals) {
  EXPECT_EQ(VectorSignal(0), SIGFPE);
  EXPECT_EQ(VectorSignal(6), SIGILL);
  EXPECT_EQ(VectorSignal(13), SIGSEGV);
  EXPECT_EQ(VectorSignal(14), SIGSEGV);
  EXPECT_TRUE(VectorHasErrorCode(14));
  EXPECT_FALSE(VectorHasErrorCode(6));
}

}  // namespace
}  // namespace flurry::x86
