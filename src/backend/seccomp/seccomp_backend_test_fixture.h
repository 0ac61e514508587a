// The seccomp backend's test fixture (tests only): a SeccompBackend with 16 MiB of guest RAM,
// hand-assembled guest code started at kCode, and helpers the backend's tests share
// (seccomp_backend_test.cc, seccomp_lanes_test.cc).
#pragma once

#include <gtest/gtest.h>
#include <poll.h>
#include <sys/types.h>

#include <cstdint>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "backend/seccomp/seccomp_backend.h"

namespace flurry {

inline constexpr uint64_t kRam = 16 << 20;
inline constexpr uint64_t kCode = 2 << 20;
inline constexpr uint64_t kData = 3 << 20;
inline constexpr uint64_t kStack = 8 << 20;

// mov $257,%eax; syscall; mov %rax,%rdi; mov %rbx,%rsi; mov $60,%eax; syscall
inline const std::vector<uint8_t> kTwoSyscalls = {0xb8, 0x01, 0x01, 0x00, 0x00, 0x0f, 0x05,
                                                  0x48, 0x89, 0xc7, 0x48, 0x89, 0xde, 0xb8,
                                                  0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05};
// mov 0x300000,%rdi; mov $60,%eax; syscall
inline const std::vector<uint8_t> kExitWithData = {0x48, 0x8b, 0x3c, 0x25, 0x00, 0x00, 0x30, 0x00,
                                                   0xb8, 0x3c, 0x00, 0x00, 0x00, 0x0f, 0x05};

inline bool WaitForExit(int pidfd) {
  pollfd p{pidfd, POLLIN, 0};
  return poll(&p, 1, 10'000) == 1;
}

// The pids of `pid`'s children.
inline std::vector<pid_t> ChildrenOf(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/task/" + std::to_string(pid) + "/children");
  std::vector<pid_t> out;
  for (pid_t child; in >> child;) out.push_back(child);
  return out;
}

class SeccompBackendTest : public ::testing::Test {
 protected:
  void SetUp() override {
    GuestLayout layout;
    layout.ram_size = kRam;
    layout.guard_start = 12 << 20;
    auto backend = SeccompBackend::Create(layout);
    ASSERT_TRUE(backend.has_value()) << backend.error().message();
    backend_ = std::move(*backend);
  }

  // Places `code` at kCode and loads registers that start it.
  void Start(const std::vector<uint8_t>& code, x86::UserCpuState state = {}) {
    ASSERT_TRUE(backend_->memory().Write(kCode, code.data(), code.size()).has_value());
    state.regs.rip = kCode;
    state.regs.rsp = kStack;
    ASSERT_TRUE(backend_->LoadCpu(state).has_value());
  }
  GuestStop::Kind RunKind() {
    auto stop = backend_->Run();
    EXPECT_TRUE(stop.has_value()) << stop.error().message();
    return stop ? stop->kind : GuestStop::Kind::kInterrupted;
  }

  std::unique_ptr<SeccompBackend> backend_;
};

}  // namespace flurry
