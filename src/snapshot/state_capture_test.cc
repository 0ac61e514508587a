#include "snapshot/state_capture.h"

#include <gtest/gtest.h>

namespace flurry {
namespace {

TEST(StateCaptureTest, RestoreGuestTakesTheSegmentBasesFromTheCpuState) {
  VmDescriptor d;
  d.identity.exe_path = "/app";
  d.memory.ram_size = 64ULL << 20;
  d.memory.image_start = 0x400000;
  d.memory.image_end = 0x401000;
  d.memory.brk_start = 0x401000;
  d.memory.brk = 0x401000;
  d.memory.mmap_top = 0x3000000;
  d.memory.stack_bottom = 0x3800000;
  d.vcpu.regs.fs_base = 0x4c6880;
  d.vcpu.regs.gs_base = 0xffff800000001000;
  Result<GuestState> state = RestoreGuest(d);
  ASSERT_TRUE(state) << state.error().message();
  EXPECT_EQ(state->segment_bases.fs_base, 0x4c6880u);
  EXPECT_EQ(state->segment_bases.gs_base, 0xffff800000001000u);
  EXPECT_FALSE(state->segment_bases.dirty);  // already in the CPU state the backend restores
  EXPECT_EQ(state->identity.exe_path, "/app");
  EXPECT_EQ(state->memory_map.brk(), 0x401000u);
}

}  // namespace
}  // namespace flurry
