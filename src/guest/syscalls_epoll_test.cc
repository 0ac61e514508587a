// The epoll calls, driven through a SyscallTable as the VMM drives them: registrations go to a
// host epoll instance with the guest's data, a wait that finds nothing parks the thread on the
// instance's host fd (ThreadWait::kFd) with its timeout as deadline and mask.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/syscall.h>

#include <csignal>
#include <vector>

#include "guest/signal_state.h"
#include "guest/syscalls_test_support.h"

namespace flurry {
namespace {

using testing::SyscallHarness;

constexpr uint64_t kFds = SyscallHarness::kScratch;              // int[2] for pipe2
constexpr uint64_t kEvent = SyscallHarness::kScratch + 0x100;    // one epoll_event for ctl
constexpr uint64_t kMask = SyscallHarness::kScratch + 0x200;     // a sigset
constexpr uint64_t kTime = SyscallHarness::kScratch + 0x300;     // a timespec
constexpr uint64_t kEvents = SyscallHarness::kScratch + 0x1000;  // the wait's answer
constexpr uint64_t kByte = SyscallHarness::kScratch + 0x8000;    // a byte to write

class EpollSyscalls : public ::testing::Test {
 protected:
  void SetUp() override {
    epfd = static_cast<int>(h.Call(SYS_epoll_create1, 0));
    ASSERT_EQ(epfd, 3);
    ASSERT_EQ(h.Call(SYS_pipe2, kFds, 0), 0);
    reader = h.memory.ReadObject<int32_t>(kFds).value();
    writer = h.memory.ReadObject<int32_t>(kFds + 4).value();
  }
  int64_t Ctl(int op, int fd, uint32_t events = 0, uint64_t data = 0) {
    const epoll_event event{.events = events, .data = {.u64 = data}};
    EXPECT_TRUE(h.memory.WriteObject(kEvent, event).has_value());
    return h.Call(SYS_epoll_ctl, static_cast<uint64_t>(epfd), static_cast<uint64_t>(op),
                  static_cast<uint64_t>(fd), kEvent);
  }
  // epoll_wait with a zero timeout: the events it returned.
  std::vector<epoll_event> Look(int max = 8) {
    const int64_t n =
        h.Call(SYS_epoll_wait, static_cast<uint64_t>(epfd), kEvents, static_cast<uint64_t>(max), 0);
    EXPECT_GE(n, 0);
    std::vector<epoll_event> got(static_cast<size_t>(std::max<int64_t>(n, 0)));
    if (n > 0) {
      EXPECT_TRUE(h.memory.Read(kEvents, got.data(), got.size() * sizeof(epoll_event)));
    }
    return got;
  }
  void WriteByte(int fd) {
    ASSERT_TRUE(h.memory.WriteObject<uint8_t>(kByte, 'x').has_value());
    ASSERT_EQ(h.Call(SYS_write, static_cast<uint64_t>(fd), kByte, 1), 1);
  }
  int HostFd(int fd) { return (*h.state.fds.Get(fd))->host_fd(); }

  SyscallHarness h;
  int epfd = -1;
  int reader = -1;
  int writer = -1;
};

TEST_F(EpollSyscalls, CreateArguments) {
  EXPECT_EQ(h.Call(SYS_epoll_create, 0), -EINVAL);
  EXPECT_EQ(h.Call(SYS_epoll_create1, O_NONBLOCK), -EINVAL);
  const int64_t fd = h.Call(SYS_epoll_create1, EPOLL_CLOEXEC);
  ASSERT_GE(fd, 0);
  EXPECT_EQ(h.Call(SYS_fcntl, static_cast<uint64_t>(fd), F_GETFD), FD_CLOEXEC);
  EXPECT_EQ((*h.state.fds.Get(static_cast<int>(fd)))->kind, FileKind::kEpoll);
  EXPECT_GE(h.Call(SYS_epoll_create, 1), 0);
}

TEST_F(EpollSyscalls, ReadinessCarriesTheGuestsData) {
  ASSERT_EQ(Ctl(EPOLL_CTL_ADD, reader, EPOLLIN, 0x1234'5678'9abc'def0), 0);
  EXPECT_TRUE(Look().empty());
  WriteByte(writer);
  const std::vector<epoll_event> got = Look();
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].events, static_cast<uint32_t>(EPOLLIN));
  EXPECT_EQ(got[0].data.u64, 0x1234'5678'9abc'def0u);
  EXPECT_EQ(Look().size(), 1u);  // level-triggered: still readable
  ASSERT_EQ(Ctl(EPOLL_CTL_MOD, reader, EPOLLIN | EPOLLET, 7), 0);
  ASSERT_EQ(Look().size(), 1u);
  EXPECT_TRUE(Look().empty());  // edge-triggered: reported once
  ASSERT_EQ(Ctl(EPOLL_CTL_ADD, writer, EPOLLOUT, 8), 0);
  ASSERT_EQ(Look().size(), 1u);
  EXPECT_EQ(Look(1)[0].data.u64, 8u);
}

TEST_F(EpollSyscalls, CtlErrorsAreLinuxs) {
  EXPECT_EQ(Ctl(EPOLL_CTL_DEL, reader), -ENOENT);
  EXPECT_EQ(Ctl(EPOLL_CTL_MOD, reader, EPOLLIN), -ENOENT);
  ASSERT_EQ(Ctl(EPOLL_CTL_ADD, reader, EPOLLIN), 0);
  EXPECT_EQ(Ctl(EPOLL_CTL_ADD, reader, EPOLLIN), -EEXIST);
  EXPECT_EQ(Ctl(EPOLL_CTL_ADD, epfd, EPOLLIN), -EINVAL);  // itself
  EXPECT_EQ(Ctl(99, writer, EPOLLIN), -EINVAL);
  EXPECT_EQ(Ctl(EPOLL_CTL_ADD, 77, EPOLLIN), -EBADF);
  EXPECT_EQ(h.Call(SYS_epoll_ctl, static_cast<uint64_t>(reader), EPOLL_CTL_ADD,
                   static_cast<uint64_t>(writer), kEvent),
            -EINVAL);  // not an epoll instance
  EXPECT_EQ(h.Call(SYS_epoll_ctl, static_cast<uint64_t>(epfd), EPOLL_CTL_ADD,
                   static_cast<uint64_t>(writer), 0x10),
            -EFAULT);
  ASSERT_EQ(Ctl(EPOLL_CTL_DEL, reader), 0);
  EXPECT_EQ(Ctl(EPOLL_CTL_DEL, reader), -ENOENT);
  // An epoll instance inside another one.
  const int inner = static_cast<int>(h.Call(SYS_epoll_create1, 0));
  ASSERT_EQ(Ctl(EPOLL_CTL_ADD, inner, EPOLLIN, 5), 0);
  EXPECT_EQ(h.Call(SYS_epoll_ctl, static_cast<uint64_t>(inner), EPOLL_CTL_ADD,
                   static_cast<uint64_t>(epfd), kEvent),
            -ELOOP);
}

TEST_F(EpollSyscalls, TheInterestListIsKeptAsData) {
  ASSERT_EQ(Ctl(EPOLL_CTL_ADD, reader, EPOLLIN, 1), 0);
  ASSERT_EQ(Ctl(EPOLL_CTL_ADD, writer, EPOLLOUT | EPOLLWAKEUP, 2), 0);
  ASSERT_EQ(Ctl(EPOLL_CTL_MOD, writer, EPOLLOUT | EPOLLET, 3), 0);
  const auto& list = (*h.state.fds.Get(epfd))->event.interests;
  ASSERT_EQ(list.size(), 2u);
  EXPECT_EQ(list[0].fd, reader);
  EXPECT_EQ(list[0].events, static_cast<uint32_t>(EPOLLIN));
  EXPECT_EQ(list[1].fd, writer);
  EXPECT_EQ(list[1].events, static_cast<uint32_t>(EPOLLOUT | EPOLLET));  // no EPOLLWAKEUP
  EXPECT_EQ(list[1].data, 3u);
  // Closing a registered file drops it (from the host's list too) at the next epoll_ctl.
  ASSERT_EQ(h.Call(SYS_close, static_cast<uint64_t>(reader)), 0);
  ASSERT_EQ(Ctl(EPOLL_CTL_DEL, writer), 0);
  EXPECT_TRUE(list.empty());
}

TEST_F(EpollSyscalls, AWaitParksOnTheInstance) {
  ASSERT_EQ(Ctl(EPOLL_CTL_ADD, reader, EPOLLIN, 1), 0);
  EXPECT_EQ(h.Call(SYS_epoll_wait, static_cast<uint64_t>(epfd), kEvents, 4, ~uint64_t{0}), 0);
  ASSERT_EQ(h.last.action, SyscallResult::Action::kBlock);
  const ThreadBlock& block = *h.state.threads.block;
  EXPECT_EQ(block.wait, ThreadWait::kFd);
  EXPECT_EQ(block.deadline_ns, 0);  // -1: no deadline
  ASSERT_EQ(block.poll_fds.size(), 1u);
  EXPECT_EQ(block.poll_fds[0].fd, HostFd(epfd));
  EXPECT_EQ(block.poll_fds[0].events, POLLIN);
  EXPECT_FALSE(block.suspend);
  // epoll_pwait: its mask stands for the wait (SIGKILL cannot be in it); a timeout is a
  // deadline.
  ASSERT_TRUE(h.memory.WriteObject<uint64_t>(kMask, ~uint64_t{0}).has_value());
  h.Call(SYS_epoll_pwait, static_cast<uint64_t>(epfd), kEvents, 4, 50, kMask, 8);
  ASSERT_EQ(h.last.action, SyscallResult::Action::kBlock);
  EXPECT_TRUE(h.state.threads.block->suspend);
  EXPECT_EQ(h.state.threads.block->suspend_mask & SignalState::Bit(SIGKILL), 0u);
  EXPECT_NE(h.state.threads.block->deadline_ns, 0);
  // The host fd it parks on becomes readable with the pipe, and the call made again answers.
  pollfd instance{HostFd(epfd), POLLIN, 0};
  EXPECT_EQ(poll(&instance, 1, 0), 0);
  WriteByte(writer);
  EXPECT_EQ(poll(&instance, 1, 0), 1);
  EXPECT_EQ(h.Call(SYS_epoll_pwait, static_cast<uint64_t>(epfd), kEvents, 4, 50, kMask, 8), 1);
}

TEST_F(EpollSyscalls, WaitArguments) {
  const auto wait = [&](uint64_t fd, uint64_t events, uint64_t max) {
    return h.Call(SYS_epoll_wait, fd, events, max, 0);
  };
  EXPECT_EQ(wait(static_cast<uint64_t>(epfd), kEvents, 0), -EINVAL);
  EXPECT_EQ(wait(static_cast<uint64_t>(epfd), kEvents, static_cast<uint64_t>(-1)), -EINVAL);
  EXPECT_EQ(wait(static_cast<uint64_t>(epfd), 0x10, 1), -EFAULT);
  EXPECT_EQ(wait(99, kEvents, 1), -EBADF);
  EXPECT_EQ(wait(static_cast<uint64_t>(reader), kEvents, 1), -EINVAL);
  EXPECT_EQ(h.Call(SYS_epoll_pwait, static_cast<uint64_t>(epfd), kEvents, 1, 0, kMask, 4),
            -EINVAL);  // sigsetsize
  ASSERT_TRUE(h.memory.WriteObject(kTime, timespec{0, 2'000'000'000}).has_value());
  EXPECT_EQ(h.Call(SYS_epoll_pwait2, static_cast<uint64_t>(epfd), kEvents, 1, kTime, 0, 8),
            -EINVAL);
  ASSERT_TRUE(h.memory.WriteObject(kTime, timespec{0, 0}).has_value());
  EXPECT_EQ(h.Call(SYS_epoll_pwait2, static_cast<uint64_t>(epfd), kEvents, 1, kTime, 0, 8), 0);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kReturn);
}

// A file that cannot be polled is EPERM before anything else is EINVAL (Linux's order).
TEST_F(EpollSyscalls, AFileThatCannotBePolledIsEpermFirst) {
  ASSERT_TRUE(h.memory.Write(kByte, "/dev/null", 10).has_value());
  const int null =
      static_cast<int>(h.Call(SYS_openat, static_cast<uint64_t>(AT_FDCWD), kByte, O_RDWR, 0));
  ASSERT_GE(null, 0);
  EXPECT_EQ(Ctl(EPOLL_CTL_ADD, null, EPOLLIN), -EPERM);
  EXPECT_EQ(Ctl(99, null, EPOLLIN), -EPERM);
  EXPECT_EQ(h.Call(SYS_epoll_ctl, static_cast<uint64_t>(reader), EPOLL_CTL_ADD,
                   static_cast<uint64_t>(null), kEvent),
            -EPERM);
}

TEST_F(EpollSyscalls, RegularFilesAndEventfds) {
  // An eventfd is pollable; the borrowed stdio is what the host's is.
  const int efd = static_cast<int>(h.Call(SYS_eventfd2, 0, 0));
  ASSERT_EQ(Ctl(EPOLL_CTL_ADD, efd, EPOLLIN, 9), 0);
  EXPECT_TRUE(Look().empty());
  ASSERT_TRUE(h.memory.WriteObject<uint64_t>(kByte, 1).has_value());
  ASSERT_EQ(h.Call(SYS_write, static_cast<uint64_t>(efd), kByte, 8), 8);
  ASSERT_EQ(Look().size(), 1u);
  EXPECT_EQ(Look()[0].data.u64, 9u);
}

}  // namespace
}  // namespace flurry
