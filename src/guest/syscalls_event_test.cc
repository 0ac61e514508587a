// eventfd, eventfd2 and the timerfd calls, driven through a SyscallTable as the VMM drives
// them: blocking reads of a zero eventfd or an unexpired timerfd park the thread on the host fd
// (ThreadWait::kFd), absolute timerfd deadlines are on the guest's clock.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>

#include <ctime>

#include "guest/guest_time.h"
#include "guest/syscalls_test_support.h"

namespace flurry {
namespace {

using testing::SyscallHarness;

constexpr uint64_t kBuf = SyscallHarness::kScratch;            // 16 bytes for reads and writes
constexpr uint64_t kSpec = SyscallHarness::kScratch + 0x1000;  // an itimerspec
constexpr uint64_t kOld = SyscallHarness::kScratch + 0x2000;   // another
constexpr int64_t kNsPerSecond = 1'000'000'000;

class EventSyscalls : public ::testing::Test {
 protected:
  // A read of 8 bytes from `fd`: the value, or -errno, or kParked.
  static constexpr int64_t kParked = INT64_MIN;
  int64_t ReadCount(int fd, uint64_t size = 8) {
    const int64_t n = h.Call(SYS_read, static_cast<uint64_t>(fd), kBuf, size);
    if (h.last.action == SyscallResult::Action::kBlock) return kParked;
    if (n < 0) return n;
    EXPECT_EQ(n, 8);
    return static_cast<int64_t>(h.memory.ReadObject<uint64_t>(kBuf).value());
  }
  int64_t WriteCount(int fd, uint64_t value, uint64_t size = 8) {
    EXPECT_TRUE(h.memory.WriteObject(kBuf, value).has_value());
    const int64_t n = h.Call(SYS_write, static_cast<uint64_t>(fd), kBuf, size);
    return h.last.action == SyscallResult::Action::kBlock ? kParked : n;
  }
  int HostFd(int fd) { return (*h.state.fds.Get(fd))->host_fd(); }
  void ExpectParkedOn(int fd, short events) {
    ASSERT_TRUE(h.state.threads.block.has_value());
    const ThreadBlock& block = *h.state.threads.block;
    EXPECT_EQ(block.wait, ThreadWait::kFd);
    ASSERT_EQ(block.poll_fds.size(), 1u);
    EXPECT_EQ(block.poll_fds[0].fd, HostFd(fd));
    EXPECT_EQ(block.poll_fds[0].events, events);
  }
  int64_t Settime(int fd, int flags, timespec value, timespec interval = {}, uint64_t old = 0) {
    const itimerspec spec{.it_interval = interval, .it_value = value};
    EXPECT_TRUE(h.memory.WriteObject(kSpec, spec).has_value());
    return h.Call(SYS_timerfd_settime, static_cast<uint64_t>(fd), static_cast<uint64_t>(flags),
                  kSpec, old);
  }
  itimerspec Gettime(int fd) {
    EXPECT_EQ(h.Call(SYS_timerfd_gettime, static_cast<uint64_t>(fd), kOld), 0);
    return h.memory.ReadObject<itimerspec>(kOld).value();
  }

  SyscallHarness h;
};

TEST_F(EventSyscalls, EventfdCountsReadsAndParksAtZero) {
  const int fd = static_cast<int>(h.Call(SYS_eventfd2, 3, 0));
  ASSERT_EQ(fd, 3);
  EXPECT_EQ((*h.state.fds.Get(fd))->kind, FileKind::kEventfd);
  EXPECT_EQ(h.Call(SYS_fcntl, 3, F_GETFL), O_RDWR);
  EXPECT_EQ(ReadCount(fd), 3);
  EXPECT_EQ(ReadCount(fd), kParked);  // zero: a blocking read waits for a write
  ExpectParkedOn(fd, POLLIN);
  EXPECT_EQ(WriteCount(fd, 5), 8);
  EXPECT_EQ(WriteCount(fd, 2), 8);
  EXPECT_EQ(ReadCount(fd), 7);
  EXPECT_EQ(ReadCount(fd, 4), -EINVAL);  // less than 8 bytes
  EXPECT_EQ(WriteCount(fd, 1, 4), -EINVAL);
  EXPECT_EQ(WriteCount(fd, ~uint64_t{0}), -EINVAL);
}

TEST_F(EventSyscalls, EventfdFlags) {
  EXPECT_EQ(h.Call(SYS_eventfd2, 0, O_APPEND), -EINVAL);
  const int fd = static_cast<int>(h.Call(SYS_eventfd2, 0, EFD_NONBLOCK | EFD_CLOEXEC));
  ASSERT_GE(fd, 0);
  EXPECT_EQ(h.Call(SYS_fcntl, static_cast<uint64_t>(fd), F_GETFL), O_RDWR | O_NONBLOCK);
  EXPECT_EQ(h.Call(SYS_fcntl, static_cast<uint64_t>(fd), F_GETFD), FD_CLOEXEC);
  EXPECT_EQ(ReadCount(fd), -EAGAIN);
  // The count overflowing: a blocking writer parks, a non-blocking one gets EAGAIN.
  EXPECT_EQ(WriteCount(fd, ~uint64_t{0} - 1), 8);
  EXPECT_EQ(WriteCount(fd, 1), -EAGAIN);
  ASSERT_EQ(h.Call(SYS_fcntl, static_cast<uint64_t>(fd), F_SETFL, 0), 0);
  // An eventfd says POLLOUT while its count is below the maximum, whether or not this value
  // fits: the writer tries again a millisecond later rather than at once (no spinning).
  EXPECT_EQ(WriteCount(fd, 1), kParked);
  const ThreadBlock& retry = *h.state.threads.block;
  EXPECT_EQ(retry.wait, ThreadWait::kFd);
  EXPECT_TRUE(retry.poll_fds.empty());
  EXPECT_TRUE(retry.restart_at_deadline);
  EXPECT_GT(retry.deadline_ns, 0);
  // The host fd stays non-blocking whatever F_SETFL said.
  EXPECT_NE(fcntl(HostFd(fd), F_GETFL) & O_NONBLOCK, 0);
  // eventfd (no flags) makes a blocking one.
  const int plain = static_cast<int>(h.Call(SYS_eventfd, 1));
  EXPECT_EQ(h.Call(SYS_fcntl, static_cast<uint64_t>(plain), F_GETFL), O_RDWR);
  EXPECT_EQ(ReadCount(plain), 1);
}

TEST_F(EventSyscalls, EventfdSemaphoreReadsOneAtATime) {
  const int fd = static_cast<int>(h.Call(SYS_eventfd2, 2, EFD_SEMAPHORE));
  EXPECT_TRUE((*h.state.fds.Get(fd))->event.semaphore);
  EXPECT_EQ(ReadCount(fd), 1);
  EXPECT_EQ(ReadCount(fd), 1);
  EXPECT_EQ(ReadCount(fd), kParked);
}

TEST_F(EventSyscalls, TimerfdArguments) {
  EXPECT_EQ(h.Call(SYS_timerfd_create, CLOCK_PROCESS_CPUTIME_ID, 0), -EINVAL);
  EXPECT_EQ(h.Call(SYS_timerfd_create, CLOCK_BOOTTIME_ALARM, 0), -EPERM);
  EXPECT_EQ(h.Call(SYS_timerfd_create, CLOCK_MONOTONIC, O_APPEND), -EINVAL);
  const int fd = static_cast<int>(h.Call(SYS_timerfd_create, CLOCK_MONOTONIC, TFD_CLOEXEC));
  ASSERT_GE(fd, 0);
  EXPECT_EQ((*h.state.fds.Get(fd))->kind, FileKind::kTimerfd);
  EXPECT_EQ((*h.state.fds.Get(fd))->event.clock, CLOCK_MONOTONIC);
  EXPECT_EQ(h.Call(SYS_fcntl, static_cast<uint64_t>(fd), F_GETFD), FD_CLOEXEC);
  EXPECT_EQ(Settime(fd, 0, {0, kNsPerSecond}), -EINVAL);  // nanoseconds out of range
  EXPECT_EQ(Settime(fd, 0, {-1, 0}), -EINVAL);
  EXPECT_EQ(Settime(fd, 0x100, {1, 0}), -EINVAL);  // unknown flag
  EXPECT_EQ(Settime(1, 0, {1, 0}), -EINVAL);       // stdout is no timerfd
  EXPECT_EQ(Settime(99, 0, {1, 0}), -EBADF);
  EXPECT_EQ(h.Call(SYS_timerfd_settime, static_cast<uint64_t>(fd), 0, 0x10, 0), -EFAULT);
  EXPECT_EQ(h.Call(SYS_timerfd_settime, 99, 0, 0x10, 0), -EFAULT);  // the value first
  EXPECT_EQ(h.Call(SYS_timerfd_gettime, 1, kOld), -EINVAL);
}

TEST_F(EventSyscalls, TimerfdExpiresAndReports) {
  const int fd = static_cast<int>(h.Call(SYS_timerfd_create, CLOCK_MONOTONIC, 0));
  EXPECT_EQ(ReadCount(fd), kParked);  // disarmed: a blocking read waits
  ExpectParkedOn(fd, POLLIN);
  // Armed for an hour, repeating every 2 s: gettime says so, settime returns it as old.
  ASSERT_EQ(Settime(fd, 0, {3600, 0}, {2, 0}), 0);
  const itimerspec now = Gettime(fd);
  EXPECT_EQ(now.it_interval.tv_sec, 2);
  EXPECT_GT(now.it_value.tv_sec, 3500);
  EXPECT_LE(now.it_value.tv_sec, 3600);
  ASSERT_EQ(Settime(fd, 0, {0, 1}, {}, kOld), 0);  // due at once
  EXPECT_EQ(h.memory.ReadObject<itimerspec>(kOld)->it_interval.tv_sec, 2);
  pollfd ready{HostFd(fd), POLLIN, 0};
  ASSERT_EQ(poll(&ready, 1, 5000), 1);
  EXPECT_EQ(ReadCount(fd), 1);
  EXPECT_EQ(Gettime(fd).it_value.tv_sec, 0);  // one-shot: disarmed once expired
  EXPECT_EQ(Gettime(fd).it_value.tv_nsec, 0);
}

// An absolute deadline is on the guest's monotonic clock, which the VMM offsets from the
// host's: an hour from the guest's now is an hour from the host's now, whatever the offset.
TEST_F(EventSyscalls, TimerfdAbsoluteDeadlinesAreOnTheGuestClock) {
  for (int64_t offset : {int64_t{1000} * kNsPerSecond, int64_t{-1000} * kNsPerSecond}) {
    h.state.monotonic_offset_ns = offset;
    const int fd = static_cast<int>(h.Call(SYS_timerfd_create, CLOCK_MONOTONIC, 0));
    const int64_t deadline = GuestMonotonicNs(offset) + int64_t{3600} * kNsPerSecond;
    ASSERT_EQ(Settime(fd, TFD_TIMER_ABSTIME, NsTimespec(deadline)), 0);
    const itimerspec left = Gettime(fd);
    EXPECT_GT(left.it_value.tv_sec, 3500) << offset;
    EXPECT_LE(left.it_value.tv_sec, 3600) << offset;
    if (offset < 0) continue;
    // A deadline before the host clock's zero is due, not disarmed.
    ASSERT_EQ(Settime(fd, TFD_TIMER_ABSTIME, {1, 0}), 0);
    pollfd ready{HostFd(fd), POLLIN, 0};
    EXPECT_EQ(poll(&ready, 1, 5000), 1) << offset;
    EXPECT_EQ(ReadCount(fd), 1) << offset;
  }
}

}  // namespace
}  // namespace flurry
