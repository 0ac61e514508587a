// The stub's test fixture (tests only): a stub process with 16 MiB of guest RAM driven
// directly through its pages, hand-assembled guest code, and helpers the stub's tests share
// (stub_process_test.cc, stub_lanes_test.cc).
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/types.h>

#include <cstdint>
#include <fstream>
#include <optional>
#include <string>
#include <vector>

#include "backend/seccomp/stub_deadline_for_tests.h"
#include "backend/seccomp/stub_process.h"

namespace flurry {

inline constexpr uint64_t kRam = 16 << 20;
inline constexpr uint64_t kCode = 2 << 20;   // guest code goes here
inline constexpr uint64_t kData = 3 << 20;   // a data word the guest reads
inline constexpr uint64_t kStack = 8 << 20;  // initial RSP
inline constexpr uint64_t kGuard = 12 << 20;

inline GuestLayout TestLayout() {
  GuestLayout layout;
  layout.ram_size = kRam;
  layout.guard_start = kGuard;  // [12 MiB, 14 MiB) stays unmapped
  return layout;
}

// The pids of `pid`'s children (those of its main thread).
inline std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t child; in >> child;) out.push_back(child);
  return out;
}

// Waits (up to `timeout_ms`) for the process behind `pidfd` to end. True if it did.
inline bool WaitForExit(int pidfd, int timeout_ms = 10'000) {
  pollfd p{pidfd, POLLIN, 0};
  return poll(&p, 1, timeout_ms) == 1;
}

inline void SetRegs(volatile flurry_stub_regs& r, uint64_t rip) {
  for (volatile uint64_t* reg :
       {&r.rax, &r.rbx, &r.rcx, &r.rdx, &r.rsi, &r.rdi, &r.rbp, &r.r8, &r.r9, &r.r10, &r.r11,
        &r.r12, &r.r13, &r.r14, &r.r15, &r.fs_base, &r.gs_base}) {
    *reg = 0;
  }
  r.rsp = kStack;
  r.rip = rip;
  r.rflags = 0x202;
}

// Machine code.
inline const std::vector<uint8_t> kGetpidThenExitWithRax = {
    0xb8, 0x27, 0x00, 0x00, 0x00,  // mov $39, %eax   (getpid)
    0x0f, 0x05,                    // syscall
    0x48, 0x89, 0xc7,              // mov %rax, %rdi
    0xb8, 0x3c, 0x00, 0x00, 0x00,  // mov $60, %eax   (exit)
    0x0f, 0x05,                    // syscall
};
inline const std::vector<uint8_t> kExitWithData = {
    0x48, 0x8b, 0x3c, 0x25, 0x00, 0x00, 0x30, 0x00,  // mov 0x300000, %rdi
    0xb8, 0x3c, 0x00, 0x00, 0x00,                    // mov $60, %eax
    0x0f, 0x05,                                      // syscall
};

class StubProcessTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto stub = StubProcess::Launch(TestLayout());
    ASSERT_TRUE(stub.has_value()) << stub.error().message();
    stub_ = std::move(*stub);
    ASSERT_TRUE(stub_.valid());
    EXPECT_EQ(stub_.shared().turn, FLURRY_STUB_TURN_VMM);
    EXPECT_EQ(stub_.shared().event, FLURRY_STUB_EVENT_READY);
    ASSERT_TRUE(stub_.Adopt().has_value());
    memory_.emplace(OpenMemory(stub_));
    deadline_.emplace(stub_.pid());
  }
  void TearDown() override { deadline_.reset(); }

  static GuestMemory OpenMemory(const StubProcess& stub) {
    return GuestMemory::Remote(kRam, stub.OpenProc("mem").value(), stub.OpenProc("pagemap").value(),
                               nullptr);
  }

  // Loads registers to run `code` (placed at kCode) and resumes; returns the next event.
  uint32_t RunCode(StubProcess& stub, const GuestMemory& memory, const std::vector<uint8_t>& code,
                   uint32_t extra_flags = 0) {
    EXPECT_TRUE(memory.Write(kCode, code.data(), code.size()).has_value());
    SetRegs(stub.shared().regs, kCode);
    return Resume(stub, FLURRY_STUB_LOAD_REGS | extra_flags);
  }
  static uint32_t Resume(StubProcess& stub, uint32_t flags) {
    stub.shared().resume_flags = flags;
    stub.Post(FLURRY_STUB_CMD_RESUME);
    auto event = stub.Wait();
    EXPECT_TRUE(event.has_value()) << event.error().message();
    return event.value_or(0);
  }

  const GuestMemory& mem() const { return *memory_; }

  StubProcess stub_;
  std::optional<GuestMemory> memory_;
  std::optional<StubDeadline> deadline_;
};

}  // namespace flurry
