// signalfd and signalfd4 driven through a SyscallTable as the VMM drives them, and the
// readiness the VMM keeps on their host eventfds (SyncSignalfds).
#include "guest/signalfd.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#include <csignal>

#include "guest/posix_timers.h"
#include "guest/signal_state.h"
#include "guest/syscalls_test_support.h"

namespace flurry {
namespace {

using testing::SyscallHarness;

constexpr uint64_t kMask = SyscallHarness::kScratch;          // a sigset_t argument
constexpr uint64_t kBuf = SyscallHarness::kScratch + 0x1000;  // records read
constexpr int32_t kSiUser = 0;

class SignalfdSyscalls : public ::testing::Test {
 protected:
  int64_t Signalfd4(int fd, uint64_t mask, int flags, uint64_t size = 8) {
    EXPECT_TRUE(h.memory.WriteObject(kMask, mask).has_value());
    return h.Call(SYS_signalfd4, static_cast<uint64_t>(fd), kMask, size,
                  static_cast<uint64_t>(flags));
  }
  void Raise(int signal, int32_t pid) {
    RaiseSignal(h.state.signals, signal, PendingSignalInfo{.code = kSiUser, .pid = pid, .uid = 0});
  }
  bool HostReadable(int fd) {
    pollfd p{(*h.state.fds.Get(fd))->host_fd(), POLLIN, 0};
    return poll(&p, 1, 0) == 1;
  }
  signalfd_siginfo Record(int i) {
    return h.memory.ReadObject<signalfd_siginfo>(kBuf + i * sizeof(signalfd_siginfo)).value();
  }

  SyscallHarness h;
};

constexpr uint64_t Bit(int signal) { return SignalState::Bit(signal); }

TEST_F(SignalfdSyscalls, ArgumentsAreCheckedAsLinuxDoes) {
  EXPECT_EQ(Signalfd4(-1, Bit(SIGUSR1), O_RDWR), -EINVAL);                        // flags
  EXPECT_EQ(Signalfd4(-1, Bit(SIGUSR1), 0, 4), -EINVAL);                          // sigset size
  EXPECT_EQ(h.Call(SYS_signalfd4, static_cast<uint64_t>(-1), 8, 8, 0), -EFAULT);  // the mask
  EXPECT_EQ(Signalfd4(77, Bit(SIGUSR1), 0), -EBADF);
  EXPECT_EQ(Signalfd4(1, Bit(SIGUSR1), 0), -EINVAL);  // stdout is no signalfd
  const int fd = static_cast<int>(Signalfd4(-1, Bit(SIGUSR1) | Bit(SIGKILL), SFD_NONBLOCK));
  ASSERT_EQ(fd, 3);
  OpenFile* file = *h.state.fds.Get(fd);
  EXPECT_EQ(file->kind, FileKind::kSignalfd);
  EXPECT_EQ(file->event.signal_mask, Bit(SIGUSR1));  // SIGKILL and SIGSTOP are never read
  EXPECT_EQ(h.Call(SYS_fcntl, 3, F_GETFL), O_RDWR | O_NONBLOCK);
  EXPECT_EQ(h.Call(SYS_fcntl, 3, F_GETFD), 0);
  // An existing signalfd gets the new mask; its flags stay.
  EXPECT_EQ(Signalfd4(fd, Bit(SIGUSR2) | Bit(SIGSTOP), SFD_CLOEXEC), fd);
  EXPECT_EQ(file->event.signal_mask, Bit(SIGUSR2));
  EXPECT_EQ(h.Call(SYS_fcntl, 3, F_GETFD), 0);
  // signalfd(2) is signalfd4 without flags.
  EXPECT_TRUE(h.memory.WriteObject(kMask, Bit(SIGINT)).has_value());
  EXPECT_EQ(h.Call(SYS_signalfd, static_cast<uint64_t>(-1), kMask, 8), 4);
  EXPECT_EQ(h.Call(SYS_fcntl, 4, F_GETFL), O_RDWR);
  // Neither written to nor read at an offset.
  EXPECT_EQ(h.Call(SYS_write, 3, kBuf, 8), -EINVAL);
  EXPECT_EQ(h.Call(SYS_pread64, 3, kBuf, 128, 0), -ESPIPE);
}

TEST_F(SignalfdSyscalls, ReadsTakeThePendingSignalsOfItsMask) {
  h.state.signals.blocked = Bit(SIGUSR1) | Bit(SIGUSR2) | Bit(SIGTERM);
  const int fd = static_cast<int>(Signalfd4(-1, Bit(SIGUSR1) | Bit(SIGUSR2), SFD_NONBLOCK));
  ASSERT_GE(fd, 0);
  EXPECT_FALSE(HostReadable(fd));
  EXPECT_EQ(h.Call(SYS_read, static_cast<uint64_t>(fd), kBuf, 128), -EAGAIN);

  Raise(SIGUSR2, 31);
  Raise(SIGTERM, 32);  // pending, not in the mask
  Raise(SIGUSR1, 30);
  EXPECT_FALSE(HostReadable(fd));  // until the VMM syncs it (at its next stop)
  SyncSignalfds(h.state);
  EXPECT_TRUE(HostReadable(fd));
  EXPECT_EQ(h.Call(SYS_read, static_cast<uint64_t>(fd), kBuf, 127), -EINVAL);  // room for none
  EXPECT_EQ(h.Call(SYS_read, static_cast<uint64_t>(fd), kBuf, 1000), 256);     // both, lowest first
  EXPECT_EQ(Record(0).ssi_signo, static_cast<uint32_t>(SIGUSR1));
  EXPECT_EQ(Record(0).ssi_pid, 30u);
  EXPECT_EQ(Record(0).ssi_code, kSiUser);
  EXPECT_EQ(Record(1).ssi_signo, static_cast<uint32_t>(SIGUSR2));
  EXPECT_EQ(Record(1).ssi_pid, 31u);
  EXPECT_EQ(h.state.signals.pending, Bit(SIGTERM));  // taken, the other left
  EXPECT_FALSE(HostReadable(fd));

  // One record per read of 128 bytes; readv scatters it.
  Raise(SIGUSR1, 40);
  Raise(SIGUSR2, 41);
  iovec parts[2] = {{reinterpret_cast<void*>(kBuf), 100},
                    {reinterpret_cast<void*>(kBuf + 100), 28}};
  ASSERT_TRUE(h.memory.WriteObject(kMask + 0x100, parts).has_value());
  EXPECT_EQ(h.Call(SYS_readv, static_cast<uint64_t>(fd), kMask + 0x100, 2), 128);
  EXPECT_EQ(Record(0).ssi_signo, static_cast<uint32_t>(SIGUSR1));
  EXPECT_EQ(Record(0).ssi_pid, 40u);
  EXPECT_TRUE(HostReadable(fd));  // SIGUSR2 is still there
  EXPECT_EQ(h.Call(SYS_read, static_cast<uint64_t>(fd), kBuf, 128), 128);
  EXPECT_EQ(Record(0).ssi_signo, static_cast<uint32_t>(SIGUSR2));
  EXPECT_FALSE(HostReadable(fd));
}

TEST_F(SignalfdSyscalls, ABlockingReadParksOnItsEventfd) {
  h.state.signals.blocked = Bit(SIGCHLD);
  const int fd = static_cast<int>(Signalfd4(-1, Bit(SIGCHLD), 0));
  EXPECT_EQ(h.Call(SYS_read, static_cast<uint64_t>(fd), kBuf, 128), 0);
  ASSERT_EQ(h.last.action, SyscallResult::Action::kBlock);
  ASSERT_TRUE(h.state.threads.block.has_value());
  ASSERT_EQ(h.state.threads.block->poll_fds.size(), 1u);
  EXPECT_EQ(h.state.threads.block->poll_fds[0].fd, (*h.state.fds.Get(fd))->host_fd());
  EXPECT_EQ(h.state.threads.block->poll_fds[0].events, POLLIN);
  // A signal of the mask sent to this thread alone (which the eventfd does not tell while the
  // thread is parked) wakes it too.
  EXPECT_EQ(h.state.threads.block->signal_set, Bit(SIGCHLD));
  // The signal comes; the VMM syncs, the wait's poll sees it, the read is made again.
  Raise(SIGCHLD, 9);
  SyncSignalfds(h.state);
  EXPECT_TRUE(HostReadable(fd));
  EXPECT_EQ(h.Call(SYS_read, static_cast<uint64_t>(fd), kBuf, 128), 128);
  EXPECT_EQ(Record(0).ssi_signo, static_cast<uint32_t>(SIGCHLD));
  // Changing the mask changes readiness at once.
  Raise(SIGUSR1, 9);
  EXPECT_EQ(Signalfd4(fd, Bit(SIGUSR1), 0), fd);
  EXPECT_TRUE(HostReadable(fd));
  EXPECT_EQ(Signalfd4(fd, Bit(SIGUSR2), 0), fd);
  EXPECT_FALSE(HostReadable(fd));
}

// Never writable (its host eventfd is): poll and epoll report no POLLOUT.
TEST_F(SignalfdSyscalls, IsNeverWritable) {
  const int fd = static_cast<int>(Signalfd4(-1, Bit(SIGUSR1), SFD_NONBLOCK));
  const pollfd asked{.fd = fd, .events = POLLIN | POLLOUT, .revents = 0};
  ASSERT_TRUE(h.memory.WriteObject(kBuf, asked).has_value());
  EXPECT_EQ(h.Call(SYS_poll, kBuf, 1, 0), 0);
  Raise(SIGUSR1, 1);
  SyncSignalfds(h.state);
  EXPECT_EQ(h.Call(SYS_poll, kBuf, 1, 0), 1);
  EXPECT_EQ(h.memory.ReadObject<pollfd>(kBuf).value().revents, POLLIN);

  const int epfd = static_cast<int>(h.Call(SYS_epoll_create1, 0));
  const epoll_event both{.events = EPOLLIN | EPOLLOUT, .data = {.u64 = 5}};
  ASSERT_TRUE(h.memory.WriteObject(kMask + 0x100, both).has_value());
  ASSERT_EQ(h.Call(SYS_epoll_ctl, static_cast<uint64_t>(epfd), EPOLL_CTL_ADD,
                   static_cast<uint64_t>(fd), kMask + 0x100),
            0);
  EXPECT_EQ(h.Call(SYS_epoll_wait, static_cast<uint64_t>(epfd), kBuf, 4, 0), 1);
  EXPECT_EQ(h.memory.ReadObject<epoll_event>(kBuf).value().events, static_cast<uint32_t>(EPOLLIN));
}

// Edge-triggered epoll sees each signal that becomes pending, as Linux wakes a signalfd's
// waiters on every signal, even while it stays readable.
TEST_F(SignalfdSyscalls, EachNewSignalIsANewEdge) {
  const int fd = static_cast<int>(Signalfd4(-1, Bit(SIGUSR1) | Bit(SIGUSR2), SFD_NONBLOCK));
  const int epfd = static_cast<int>(h.Call(SYS_epoll_create1, 0));
  const epoll_event edge{.events = EPOLLIN | EPOLLET, .data = {.u64 = 9}};
  ASSERT_TRUE(h.memory.WriteObject(kMask + 0x100, edge).has_value());
  ASSERT_EQ(h.Call(SYS_epoll_ctl, static_cast<uint64_t>(epfd), EPOLL_CTL_ADD,
                   static_cast<uint64_t>(fd), kMask + 0x100),
            0);
  Raise(SIGUSR1, 1);
  SyncSignalfds(h.state);
  EXPECT_EQ(h.Call(SYS_epoll_wait, static_cast<uint64_t>(epfd), kBuf, 4, 0), 1);
  EXPECT_EQ(h.Call(SYS_epoll_wait, static_cast<uint64_t>(epfd), kBuf, 4, 0), 0);  // one edge
  SyncSignalfds(h.state);                                                         // nothing new
  EXPECT_EQ(h.Call(SYS_epoll_wait, static_cast<uint64_t>(epfd), kBuf, 4, 0), 0);
  Raise(SIGUSR2, 1);
  SyncSignalfds(h.state);
  EXPECT_EQ(h.Call(SYS_epoll_wait, static_cast<uint64_t>(epfd), kBuf, 4, 0), 1);
}

// While no thread runs (all wait), the last one's own signals are not the signalfd's.
TEST_F(SignalfdSyscalls, WithNoThreadRunningOnlyTheProcesssSignalsCount) {
  const int fd = static_cast<int>(Signalfd4(-1, Bit(SIGUSR1), SFD_NONBLOCK));
  h.state.signals.thread_pending = Bit(SIGUSR1);
  SyncSignalfds(h.state, /*thread_running=*/false);
  EXPECT_FALSE(HostReadable(fd));
  SyncSignalfds(h.state);
  EXPECT_TRUE(HostReadable(fd));
  SyncSignalfds(h.state, /*thread_running=*/false);
  EXPECT_FALSE(HostReadable(fd));
}

// The running thread's own signals (tgkill) are read too; a POSIX timer's carries its id.
TEST_F(SignalfdSyscalls, ThreadSignalsAndTimerSignalsAreRead) {
  h.state.signals.blocked = Bit(SIGUSR1);
  const int fd = static_cast<int>(Signalfd4(-1, Bit(SIGUSR1), SFD_NONBLOCK));
  RaiseThreadSignal(h.state.signals, h.state.signals.thread_pending, h.state.signals.blocked,
                    SIGUSR1, PendingSignalInfo{.code = SI_TKILL, .pid = 42, .uid = 0});
  SyncSignalfds(h.state);
  EXPECT_TRUE(HostReadable(fd));
  EXPECT_EQ(h.Call(SYS_read, static_cast<uint64_t>(fd), kBuf, 128), 128);
  EXPECT_EQ(Record(0).ssi_code, SI_TKILL);
  EXPECT_EQ(h.state.signals.thread_pending, 0u);

  const signalfd_siginfo timer = SignalfdInfoOf(
      SIGALRM, PendingSignalInfo{.code = kSiTimer, .timer_id = 3, .overrun = 2, .value = 0x55});
  EXPECT_EQ(timer.ssi_tid, 3u);
  EXPECT_EQ(timer.ssi_overrun, 2u);
  EXPECT_EQ(timer.ssi_ptr, 0x55u);
  EXPECT_EQ(timer.ssi_int, 0x55);
}

// A forked process's signalfd reads its own signals: its host fd number stays, its eventfd is
// new (the parent's keeps its readiness).
TEST_F(SignalfdSyscalls, AForkedProcessGetsItsOwnEventfd) {
  const int fd = static_cast<int>(Signalfd4(-1, Bit(SIGUSR1), SFD_NONBLOCK));
  Raise(SIGUSR1, 1);
  SyncSignalfds(h.state);
  const int host = (*h.state.fds.Get(fd))->host_fd();
  const int parents = dup(host);
  ASSERT_GE(parents, 0);
  ASSERT_TRUE(RenewSignalfds(h.state.fds));
  EXPECT_EQ((*h.state.fds.Get(fd))->host_fd(), host);
  EXPECT_FALSE(HostReadable(fd));
  pollfd p{parents, POLLIN, 0};
  EXPECT_EQ(poll(&p, 1, 0), 1);
  close(parents);
  SyncSignalfds(h.state);  // as the child's VMM does at its first stop
  EXPECT_TRUE(HostReadable(fd));
}

}  // namespace
}  // namespace flurry
