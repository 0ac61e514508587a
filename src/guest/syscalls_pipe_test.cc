// pipe and pipe2, and the reads and writes of their ends, driven through a SyscallTable as
// the VMM drives them: a blocking read of an empty pipe or write of a full one parks the
// thread (SyscallResult::Block() with a ThreadWait::kFd request), a write without readers
// fails with EPIPE and raises SIGPIPE.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <csignal>
#include <cstring>
#include <string>

#include "guest/guest_time.h"
#include "guest/syscalls_test_support.h"

namespace flurry {
namespace {

using testing::SyscallHarness;

constexpr uint64_t kFds = SyscallHarness::kScratch;              // int[2] for pipe2
constexpr uint64_t kBuf = SyscallHarness::kScratch + 0x1000;     // data, up to 256 KiB
constexpr uint64_t kSmall = SyscallHarness::kScratch + 0x80000;  // ioctl answers, sigactions
constexpr size_t kMaxBuf = 256 << 10;

class PipeSyscalls : public ::testing::Test {
 protected:
  // A pipe made by the guest: its read and write ends' guest fds.
  void MakePipe(int flags = 0) {
    ASSERT_EQ(h.Call(SYS_pipe2, kFds, static_cast<uint64_t>(flags)), 0);
    reader = h.memory.ReadObject<int32_t>(kFds).value();
    writer = h.memory.ReadObject<int32_t>(kFds + 4).value();
  }
  int64_t Write(int fd, const std::string& data) {
    EXPECT_LE(data.size(), kMaxBuf);
    EXPECT_TRUE(h.memory.Write(kBuf, data.data(), data.size()).has_value());
    return h.Call(SYS_write, static_cast<uint64_t>(fd), kBuf, data.size());
  }
  // The bytes read, or "<errno N>"/"<parked>".
  std::string Read(int fd, size_t count) {
    const int64_t n = h.Call(SYS_read, static_cast<uint64_t>(fd), kBuf, count);
    if (h.last.action == SyscallResult::Action::kBlock) return "<parked>";
    if (n < 0) return "<errno " + std::to_string(-n) + ">";
    std::string data(static_cast<size_t>(n), '\0');
    EXPECT_TRUE(h.memory.Read(kBuf, data.data(), data.size()).has_value());
    return data;
  }
  int HostFd(int fd) { return (*h.state.fds.Get(fd))->host_fd(); }
  // The wait the last call asked for.
  const ThreadBlock& Parked() {
    EXPECT_EQ(h.last.action, SyscallResult::Action::kBlock);
    EXPECT_TRUE(h.state.threads.block.has_value());
    return *h.state.threads.block;
  }
  void SetHandler(int signal, uint64_t handler) {
    const GuestSigaction action{.handler = handler, .flags = 0, .restorer = 0, .mask = 0};
    ASSERT_TRUE(h.memory.WriteObject(kSmall, action).has_value());
    ASSERT_EQ(h.Call(SYS_rt_sigaction, static_cast<uint64_t>(signal), kSmall, 0, 8), 0);
  }

  SyscallHarness h;
  int reader = -1;
  int writer = -1;
};

TEST_F(PipeSyscalls, WriteThenReadThenEndOfFile) {
  MakePipe();
  EXPECT_EQ(reader, 3);
  EXPECT_EQ(writer, 4);
  const OpenFile* end = *h.state.fds.Get(reader);
  EXPECT_EQ(end->kind, FileKind::kPipe);
  EXPECT_TRUE(end->path.empty());
  EXPECT_EQ(Write(writer, "hello"), 5);
  EXPECT_EQ(Read(reader, 3), "hel");
  EXPECT_EQ(Read(reader, 100), "lo");
  ASSERT_EQ(h.Call(SYS_close, static_cast<uint64_t>(writer)), 0);
  EXPECT_EQ(Read(reader, 100), "");  // no writer left: end of file
  EXPECT_EQ(h.Call(SYS_write, static_cast<uint64_t>(reader), kBuf, 1), -EBADF);
  EXPECT_EQ(h.Call(SYS_lseek, static_cast<uint64_t>(reader), 0, SEEK_SET), -ESPIPE);
}

TEST_F(PipeSyscalls, PipeAndPipe2Flags) {
  ASSERT_EQ(h.Call(SYS_pipe, kFds), 0);
  EXPECT_EQ(h.memory.ReadObject<int32_t>(kFds).value(), 3);
  EXPECT_EQ(h.Call(SYS_fcntl, 3, F_GETFL), O_RDONLY);
  EXPECT_EQ(h.Call(SYS_fcntl, 4, F_GETFL), O_WRONLY);
  EXPECT_EQ(h.Call(SYS_fcntl, 3, F_GETFD), 0);
  MakePipe(O_CLOEXEC | O_NONBLOCK);
  EXPECT_EQ(reader, 5);
  EXPECT_EQ(h.Call(SYS_fcntl, 5, F_GETFL), O_RDONLY | O_NONBLOCK);
  EXPECT_EQ(h.Call(SYS_fcntl, 6, F_GETFL), O_WRONLY | O_NONBLOCK);
  EXPECT_EQ(h.Call(SYS_fcntl, 6, F_GETFD), FD_CLOEXEC);
  EXPECT_EQ(h.Call(SYS_pipe2, kFds, O_APPEND), -EINVAL);
  EXPECT_EQ(h.Call(SYS_pipe2, kFds, O_CREAT), -EINVAL);
  // Every host end is non-blocking and close-on-exec, whatever the guest asked for.
  for (int fd = 3; fd <= 6; ++fd) {
    EXPECT_NE(fcntl(HostFd(fd), F_GETFL) & O_NONBLOCK, 0) << fd;
    EXPECT_EQ(fcntl(HostFd(fd), F_GETFD), FD_CLOEXEC) << fd;
  }
}

TEST_F(PipeSyscalls, ABadPointerMakesNoFds) {
  EXPECT_EQ(h.Call(SYS_pipe2, 0x10, 0), -EFAULT);
  EXPECT_EQ(h.state.fds.OpenCount(), 3);
  EXPECT_FALSE(h.state.fds.IsOpen(3));
}

TEST_F(PipeSyscalls, AFullTableMakesNoPipe) {
  while (h.state.fds.OpenCount() < FdTable::kMaxFds - 1) {
    ASSERT_GE(h.Call(SYS_dup, 1), 0);
  }
  EXPECT_EQ(h.Call(SYS_pipe2, kFds, 0), -EMFILE);  // one slot is not enough
  ASSERT_EQ(h.Call(SYS_close, 3), 0);
  MakePipe();
  EXPECT_EQ(reader, 3);
  EXPECT_EQ(writer, FdTable::kMaxFds - 1);
}

TEST_F(PipeSyscalls, ABlockingReadOfAnEmptyPipeParksOnItsHostFd) {
  MakePipe();
  EXPECT_EQ(Read(reader, 10), "<parked>");
  const ThreadBlock& block = Parked();
  EXPECT_EQ(block.wait, ThreadWait::kFd);
  EXPECT_EQ(block.deadline_ns, 0);
  ASSERT_EQ(block.poll_fds.size(), 1u);
  EXPECT_EQ(block.poll_fds[0].fd, HostFd(reader));
  EXPECT_EQ(block.poll_fds[0].events, POLLIN);
  // Made again once the host fd is ready (the VMM restarts the thread), it reads.
  EXPECT_EQ(Write(writer, "data"), 4);
  EXPECT_EQ(Read(reader, 10), "data");
  EXPECT_EQ(h.last.action, SyscallResult::Action::kReturn);
  // readv parks the same way.
  struct {
    uint64_t base, len;
  } iov{kBuf, 8};
  ASSERT_TRUE(h.memory.WriteObject(kSmall, iov).has_value());
  h.Call(SYS_readv, static_cast<uint64_t>(reader), kSmall, 1);
  EXPECT_EQ(Parked().poll_fds[0].events, POLLIN);
  // A read of nothing does not wait.
  EXPECT_EQ(Read(reader, 0), "");
}

TEST_F(PipeSyscalls, NonBlockingEndsFailWithEagain) {
  MakePipe(O_NONBLOCK);
  EXPECT_EQ(Read(reader, 10), "<errno " + std::to_string(EAGAIN) + ">");
  // F_SETFL changes what the guest sees; the host end stays non-blocking.
  EXPECT_EQ(h.Call(SYS_fcntl, static_cast<uint64_t>(reader), F_SETFL, 0), 0);
  EXPECT_EQ(h.Call(SYS_fcntl, static_cast<uint64_t>(reader), F_GETFL), O_RDONLY);
  EXPECT_NE(fcntl(HostFd(reader), F_GETFL) & O_NONBLOCK, 0);
  EXPECT_EQ(Read(reader, 10), "<parked>");
  EXPECT_EQ(h.Call(SYS_fcntl, static_cast<uint64_t>(reader), F_SETFL, O_NONBLOCK), 0);
  EXPECT_EQ(Read(reader, 10), "<errno " + std::to_string(EAGAIN) + ">");
}

// A blocking write of more than fits writes what fits and parks for the rest, recording how
// much it wrote; made again once the pipe has room (ThreadTable::resumed, as the VMM sets it),
// it goes on after those bytes and returns the whole count, as Linux's pipe_write.
TEST_F(PipeSyscalls, AFullPipeParksAWriteWithWhatItWrote) {
  MakePipe();
  const int capacity = fcntl(HostFd(writer), F_GETPIPE_SZ);
  ASSERT_GT(capacity, 0);
  ASSERT_LE(static_cast<size_t>(capacity), kMaxBuf / 2);
  const std::string data = std::string(static_cast<size_t>(capacity), 'x') + std::string(1000, 'y');
  EXPECT_EQ(Write(writer, data), 0);  // parked (the value is not the guest's)
  const ThreadBlock& block = Parked();
  EXPECT_EQ(block.wait, ThreadWait::kFd);
  ASSERT_EQ(block.poll_fds.size(), 1u);
  EXPECT_EQ(block.poll_fds[0].fd, HostFd(writer));
  EXPECT_EQ(block.poll_fds[0].events, POLLOUT);
  ASSERT_TRUE(block.partial.has_value());
  EXPECT_EQ(block.partial->nr, static_cast<uint64_t>(SYS_write));
  EXPECT_EQ(block.partial->done, static_cast<uint64_t>(capacity));
  const PartialWrite partial = *block.partial;
  // The reader makes room; the write is made again and writes only the rest.
  EXPECT_EQ(Read(reader, kMaxBuf).size(), static_cast<size_t>(capacity));
  h.state.threads.resumed = partial;
  EXPECT_EQ(h.Call(SYS_write, static_cast<uint64_t>(writer), kBuf, data.size()),
            static_cast<int64_t>(data.size()));
  EXPECT_FALSE(h.state.threads.resumed.has_value());  // taken
  EXPECT_EQ(Read(reader, kMaxBuf), std::string(1000, 'y'));
  // Full again: a write that writes nothing parks without a partial count.
  EXPECT_EQ(Write(writer, std::string(static_cast<size_t>(capacity), 'z')), capacity);
  EXPECT_EQ(Write(writer, "w"), 0);
  EXPECT_FALSE(Parked().partial.has_value());
  // Non-blocking, the same write fails, and one that fits in part returns the part.
  ASSERT_EQ(h.Call(SYS_fcntl, static_cast<uint64_t>(writer), F_SETFL, O_NONBLOCK), 0);
  EXPECT_EQ(Write(writer, "w"), -EAGAIN);
  EXPECT_EQ(Read(reader, 4096).size(), 4096u);  // a page of the pipe free
  EXPECT_EQ(Write(writer, std::string(4096 + 100, 'v')), 4096);
}

// A resumed write is only the same call's: another write does not skip bytes.
TEST_F(PipeSyscalls, AResumedWriteIsOnlyTheSameCall) {
  MakePipe();
  h.state.threads.resumed = PartialWrite{
      .nr = SYS_write, .args = {static_cast<uint64_t>(writer), kBuf + 1, 5}, .done = 3};
  EXPECT_EQ(Write(writer, "hello"), 5);
  EXPECT_EQ(Read(reader, 10), "hello");
}

TEST_F(PipeSyscalls, AWriteWithoutReadersFailsAndRaisesSigpipe) {
  signal(SIGPIPE, SIG_IGN);  // as the VMM process does (apps/flurry: PrepareVmmProcess)
  MakePipe();
  ASSERT_EQ(h.Call(SYS_close, static_cast<uint64_t>(reader)), 0);
  EXPECT_EQ(Write(writer, "lost"), -EPIPE);
  const SignalState& signals = h.state.signals;
  EXPECT_EQ(signals.thread_pending, SignalState::Bit(SIGPIPE));  // the writing thread's
  EXPECT_EQ(signals.pending, 0u);
  EXPECT_EQ(signals.pending_info[SIGPIPE].code, 0);  // SI_USER
  EXPECT_EQ(signals.pending_info[SIGPIPE].pid, 42);
  // Ignored, it is not raised; EPIPE stays.
  h.state.signals.thread_pending = 0;
  SetHandler(SIGPIPE, reinterpret_cast<uint64_t>(SIG_IGN));
  EXPECT_EQ(Write(writer, "lost"), -EPIPE);
  EXPECT_EQ(h.state.signals.thread_pending, 0u);
}

TEST_F(PipeSyscalls, DupedEndsShareTheHostPipe) {
  MakePipe();
  ASSERT_EQ(h.Call(SYS_dup2, static_cast<uint64_t>(writer), 10), 10);
  ASSERT_EQ(h.Call(SYS_close, static_cast<uint64_t>(writer)), 0);
  EXPECT_EQ(Write(10, "via dup"), 7);
  EXPECT_EQ(Read(reader, 100), "via dup");
  EXPECT_EQ(Read(reader, 100), "<parked>");  // fd 10 still writes: no end of file
  ASSERT_EQ(h.Call(SYS_close, 10), 0);
  EXPECT_EQ(Read(reader, 100), "");
}

TEST_F(PipeSyscalls, FionreadAndFstat) {
  MakePipe();
  EXPECT_EQ(Write(writer, "12345"), 5);
  ASSERT_EQ(h.Call(SYS_ioctl, static_cast<uint64_t>(reader), FIONREAD, kSmall), 0);
  EXPECT_EQ(h.memory.ReadObject<int32_t>(kSmall).value(), 5);
  ASSERT_EQ(h.Call(SYS_fstat, static_cast<uint64_t>(writer), kSmall), 0);
  const auto st = h.memory.ReadObject<struct stat>(kSmall).value();
  EXPECT_TRUE(S_ISFIFO(st.st_mode));
  EXPECT_EQ(h.Call(SYS_ioctl, static_cast<uint64_t>(reader), TCGETS, kSmall), -ENOTTY);
}

// The borrowed stdio read without O_NONBLOCK: nothing there parks the thread instead of
// blocking the VMM in read(2) (the host fd may well be blocking).
TEST_F(PipeSyscalls, ABlockingStdioReadWithNothingThereParks) {
  int ends[2];
  ASSERT_EQ(pipe(ends), 0);  // blocking, as a host's stdin may be
  OpenFile in;
  in.kind = FileKind::kStdio;
  in.stdio_fd = ends[0];
  in.flags = O_RDONLY;
  ASSERT_TRUE(h.state.fds.InstallAt(0, std::make_shared<OpenFile>(std::move(in)), false));
  EXPECT_EQ(Read(0, 10), "<parked>");
  EXPECT_EQ(Parked().poll_fds[0].fd, ends[0]);
  EXPECT_EQ(Parked().poll_fds[0].events, POLLIN);
  ASSERT_EQ(write(ends[1], "line\n", 5), 5);
  EXPECT_EQ(Read(0, 10), "line\n");
  close(ends[1]);
  EXPECT_EQ(Read(0, 10), "");  // the host's end of file
  ASSERT_TRUE(h.state.fds.Close(0));
  close(ends[0]);
}

// poll and ppoll (syscalls_poll.cc) over pipe ends: an answer at once, or a kFd wait on
// every host fd with the timeout as its deadline.
TEST_F(PipeSyscalls, PollAnswersAtOnceWhenSomethingIsReady) {
  MakePipe();
  const pollfd asked[3] = {{.fd = reader, .events = POLLIN, .revents = 0x7f},
                           {.fd = writer, .events = POLLOUT, .revents = 0},
                           {.fd = -1, .events = POLLIN, .revents = 0x7f}};
  ASSERT_TRUE(h.memory.Write(kSmall, asked, sizeof asked).has_value());
  EXPECT_EQ(h.Call(SYS_poll, kSmall, 3, static_cast<uint64_t>(-1)), 1);  // the writable end
  pollfd got[3];
  ASSERT_TRUE(h.memory.Read(kSmall, got, sizeof got).has_value());
  EXPECT_EQ(got[0].revents, 0);
  EXPECT_EQ(got[1].revents, POLLOUT);
  EXPECT_EQ(got[2].revents, 0);  // a negative fd is skipped
  EXPECT_EQ(Write(writer, "x"), 1);
  EXPECT_EQ(h.Call(SYS_poll, kSmall, 1, 0), 1);
  ASSERT_TRUE(h.memory.Read(kSmall, got, sizeof got).has_value());
  EXPECT_EQ(got[0].revents, POLLIN);
  const pollfd closed{.fd = 99, .events = POLLIN, .revents = 0};
  ASSERT_TRUE(h.memory.WriteObject(kSmall, closed).has_value());
  EXPECT_EQ(h.Call(SYS_poll, kSmall, 1, 0), 1);
  EXPECT_EQ(h.memory.ReadObject<pollfd>(kSmall).value().revents, POLLNVAL);
  EXPECT_EQ(h.Call(SYS_poll, kSmall, FdTable::kMaxFds + 1, 0), -EINVAL);
  EXPECT_EQ(h.Call(SYS_poll, 0x10, 1, 0), -EFAULT);
}

TEST_F(PipeSyscalls, PollWithNothingReadyWaitsOnEveryHostFdUntilItsTimeout) {
  MakePipe();
  const pollfd asked[2] = {{.fd = reader, .events = POLLIN, .revents = 0},
                           {.fd = 0, .events = 0, .revents = 0}};
  ASSERT_TRUE(h.memory.Write(kSmall, asked, sizeof asked).has_value());
  EXPECT_EQ(h.Call(SYS_poll, kSmall, 1, 0), 0);  // no timeout: no wait
  EXPECT_EQ(h.last.action, SyscallResult::Action::kReturn);
  const int64_t before = GuestMonotonicNs(h.state.monotonic_offset_ns);
  h.Call(SYS_poll, kSmall, 1, 100);
  const ThreadBlock& block = Parked();
  EXPECT_EQ(block.wait, ThreadWait::kFd);
  EXPECT_GE(block.deadline_ns, before + 100'000'000);
  EXPECT_LE(block.deadline_ns, GuestMonotonicNs(h.state.monotonic_offset_ns) + 100'000'000);
  EXPECT_EQ(block.expiry_result, 0);  // the revents written are all zero
  EXPECT_FALSE(block.suspend);
  ASSERT_EQ(block.poll_fds.size(), 1u);
  EXPECT_EQ(block.poll_fds[0].fd, HostFd(reader));
  EXPECT_EQ(block.poll_fds[0].events, POLLIN);
  h.Call(SYS_poll, kSmall, 1, static_cast<uint64_t>(-1));
  EXPECT_EQ(Parked().deadline_ns, 0);  // forever
}

TEST_F(PipeSyscalls, PpollWaitsUnderItsSignalMask) {
  MakePipe();
  const pollfd asked{.fd = reader, .events = POLLIN, .revents = 0};
  ASSERT_TRUE(h.memory.WriteObject(kSmall, asked).has_value());
  const uint64_t mask = SignalState::Bit(SIGINT) | SignalState::Bit(SIGKILL);
  ASSERT_TRUE(h.memory.WriteObject(kSmall + 64, mask).has_value());
  h.Call(SYS_ppoll, kSmall, 1, 0, kSmall + 64, 8);
  const ThreadBlock& block = Parked();
  EXPECT_TRUE(block.suspend);
  EXPECT_EQ(block.suspend_mask, SignalState::Bit(SIGINT));  // SIGKILL is never blocked
  EXPECT_EQ(block.deadline_ns, 0);
  EXPECT_EQ(h.Call(SYS_ppoll, kSmall, 1, 0, kSmall + 64, 4), -EINVAL);
  const timespec zero{0, 0};
  ASSERT_TRUE(h.memory.WriteObject(kSmall + 128, zero).has_value());
  EXPECT_EQ(h.Call(SYS_ppoll, kSmall, 1, kSmall + 128, 0, 0), 0);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kReturn);
  const timespec bad{0, 1'000'000'000};
  ASSERT_TRUE(h.memory.WriteObject(kSmall + 128, bad).has_value());
  EXPECT_EQ(h.Call(SYS_ppoll, kSmall, 1, kSmall + 128, 0, 0), -EINVAL);
}

// select: the fd sets are input and output both, so a finite timeout zeroes the guest's timeval
// and ends in the call made again (restart_at_deadline), which answers with empty sets.
TEST_F(PipeSyscalls, SelectAnswersOrWaitsToBeMadeAgain) {
  MakePipe();
  const uint64_t read_set = kSmall;
  const uint64_t write_set = kSmall + 128;
  const uint64_t tv_addr = kSmall + 256;
  auto sets = [&](uint64_t reads, uint64_t writes) {
    ASSERT_TRUE(h.memory.WriteObject(read_set, reads).has_value());
    ASSERT_TRUE(h.memory.WriteObject(write_set, writes).has_value());
  };
  sets(uint64_t{1} << reader, uint64_t{1} << writer);
  EXPECT_EQ(h.Call(SYS_select, 64, read_set, write_set, 0, 0), 1);  // writable
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(read_set).value(), 0u);
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(write_set).value(), uint64_t{1} << writer);

  sets(uint64_t{1} << reader, 0);
  const timeval tv{2, 500};
  ASSERT_TRUE(h.memory.WriteObject(tv_addr, tv).has_value());
  const int64_t before = GuestMonotonicNs(h.state.monotonic_offset_ns);
  h.Call(SYS_select, 64, read_set, write_set, 0, tv_addr);
  const ThreadBlock& block = Parked();
  EXPECT_TRUE(block.restart_at_deadline);
  EXPECT_GE(block.deadline_ns, before + 2'000'500'000);
  ASSERT_EQ(block.poll_fds.size(), 1u);
  EXPECT_EQ(block.poll_fds[0].fd, HostFd(reader));
  const timeval left = h.memory.ReadObject<timeval>(tv_addr).value();
  EXPECT_EQ(left.tv_sec, 0);
  EXPECT_EQ(left.tv_usec, 0);
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(read_set).value(), uint64_t{1} << reader);  // kept
  // Made again at the deadline: the timeout is zero now, the answer empty sets.
  EXPECT_EQ(h.Call(SYS_select, 64, read_set, write_set, 0, tv_addr), 0);
  EXPECT_EQ(h.last.action, SyscallResult::Action::kReturn);
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(read_set).value(), 0u);
  // Without a timeout it waits for ever, and is only made again when the fd is ready.
  sets(uint64_t{1} << reader, 0);
  h.Call(SYS_select, 64, read_set, 0, 0, 0);
  EXPECT_FALSE(Parked().restart_at_deadline);
  EXPECT_EQ(Parked().deadline_ns, 0);
  EXPECT_EQ(Write(writer, "x"), 1);
  EXPECT_EQ(h.Call(SYS_select, 64, read_set, 0, 0, 0), 1);
  EXPECT_EQ(h.memory.ReadObject<uint64_t>(read_set).value(), uint64_t{1} << reader);
  sets(uint64_t{1} << 40, 0);  // not open
  EXPECT_EQ(h.Call(SYS_select, 64, read_set, 0, 0, 0), -EBADF);
  EXPECT_EQ(h.Call(SYS_select, static_cast<uint64_t>(-1), read_set, 0, 0, 0), -EINVAL);
}

// sendfile between two pipes: what it reads it writes; an empty input parks (nothing lost);
// an offset on a pipe is ESPIPE; a full blocking output parks before anything is read.
TEST_F(PipeSyscalls, SendfileMovesBytesBetweenPipes) {
  MakePipe();
  const int in_reader = reader, in_writer = writer;
  MakePipe();
  ASSERT_EQ(Write(in_writer, "hello"), 5);
  EXPECT_EQ(
      h.Call(SYS_sendfile, static_cast<uint64_t>(writer), static_cast<uint64_t>(in_reader), 0, 100),
      5);
  EXPECT_EQ(Read(reader, 100), "hello");
  h.Call(SYS_sendfile, static_cast<uint64_t>(writer), static_cast<uint64_t>(in_reader), 0, 100);
  EXPECT_EQ(Parked().poll_fds.at(0).fd, HostFd(in_reader));
  ASSERT_TRUE(h.memory.WriteObject(kSmall, int64_t{0}).has_value());
  ASSERT_EQ(Write(in_writer, "x"), 1);
  EXPECT_EQ(h.Call(SYS_sendfile, static_cast<uint64_t>(writer), static_cast<uint64_t>(in_reader),
                   kSmall, 100),
            -ESPIPE);
  EXPECT_EQ(Read(in_reader, 10), "x");  // nothing was taken
  // Fill the output pipe: sendfile parks on it without reading its input.
  const std::string block(64 << 10, 'b');
  while (Write(writer, block) > 0) {
  }
  h.state.threads.block.reset();
  ASSERT_EQ(Write(in_writer, "kept"), 4);
  h.Call(SYS_sendfile, static_cast<uint64_t>(writer), static_cast<uint64_t>(in_reader), 0, 100);
  EXPECT_EQ(Parked().poll_fds.at(0).fd, HostFd(writer));
  EXPECT_EQ(Read(in_reader, 10), "kept");
}

}  // namespace
}  // namespace flurry
