#include "snapshot/state_capture.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <csignal>
#include <ctime>

#include "guest/signal_state.h"
#include "guest/signalfd.h"
#include "guest/syscalls_test_support.h"

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
  Result<GuestState> state = RestoreGuest(d, ClockResume::kFromCapture);
  ASSERT_TRUE(state) << state.error().message();
  EXPECT_EQ(state->segment_bases.fs_base, 0x4c6880u);
  EXPECT_EQ(state->segment_bases.gs_base, 0xffff800000001000u);
  EXPECT_FALSE(state->segment_bases.dirty);  // already in the CPU state the backend restores
  EXPECT_EQ(state->identity.exe_path, "/app");
  EXPECT_EQ(state->memory_map.brk(), 0x401000u);
}

constexpr int64_t kSecond = 1'000'000'000;

VmDescriptor SmallDescriptor() {
  VmDescriptor d;
  d.identity.exe_path = "/app";
  d.memory.ram_size = 64ULL << 20;
  d.memory.image_start = 0x400000;
  d.memory.image_end = 0x401000;
  d.memory.brk_start = 0x401000;
  d.memory.brk = 0x401000;
  d.memory.mmap_top = 0x3000000;
  d.memory.stack_bottom = 0x3800000;
  return d;
}

// The guest's clock now, for a restored state.
int64_t GuestNow(const GuestState& state) {
  return GuestFromHostNs(HostClockNs(CLOCK_MONOTONIC), state.monotonic_offset_ns);
}

TEST(StateCaptureTest, CapturesTheGuestClockAtTheCaptureInstant) {
  GuestState state;
  state.monotonic_offset_ns = 5000 * kSecond;
  const int64_t before = HostClockNs(CLOCK_MONOTONIC);
  const int64_t realtime_before = HostClockNs(CLOCK_REALTIME);
  const VmDescriptor d = CaptureGuestState(state).value();
  ASSERT_TRUE(d.clock.has_value());
  EXPECT_GE(d.clock->guest_monotonic_ns, before + 5000 * kSecond);
  EXPECT_LE(d.clock->guest_monotonic_ns, HostClockNs(CLOCK_MONOTONIC) + 5000 * kSecond);
  EXPECT_GE(d.clock->host_realtime_ns, realtime_before);
  EXPECT_LE(d.clock->host_realtime_ns, HostClockNs(CLOCK_REALTIME));
}

// A snapshot restore continues from the captured value, however long ago the capture was.
TEST(StateCaptureTest, RestoreFromCaptureContinuesFromTheCapturedValue) {
  VmDescriptor d = SmallDescriptor();
  d.clock = ClockCapture{.guest_monotonic_ns = 77 * kSecond,
                         .host_realtime_ns = HostClockNs(CLOCK_REALTIME) - 600 * kSecond};
  Result<GuestState> state = RestoreGuest(d, ClockResume::kFromCapture);
  ASSERT_TRUE(state) << state.error().message();
  const int64_t now = GuestNow(*state);
  EXPECT_GE(now, 77 * kSecond);
  EXPECT_LT(now, 77 * kSecond + 5 * kSecond) << "the 10 minutes since the capture were counted";
}

// A clone continues from the captured value plus the wall-clock time since the capture.
TEST(StateCaptureTest, RestoreAsACloneAddsTheWallClockTime) {
  VmDescriptor d = SmallDescriptor();
  d.clock = ClockCapture{.guest_monotonic_ns = 77 * kSecond,
                         .host_realtime_ns = HostClockNs(CLOCK_REALTIME) - 600 * kSecond};
  Result<GuestState> state = RestoreGuest(d, ClockResume::kPlusWallClock);
  ASSERT_TRUE(state) << state.error().message();
  const int64_t now = GuestNow(*state);
  EXPECT_GE(now, 677 * kSecond);
  EXPECT_LT(now, 677 * kSecond + 5 * kSecond);
}

// A descriptor from before the clock was recorded: the host's monotonic clock, as then.
TEST(StateCaptureTest, RestoreWithoutAClockRecordReadsTheHostsClock) {
  VmDescriptor d = SmallDescriptor();
  d.start_time_ns = 123;
  for (ClockResume how : {ClockResume::kFromCapture, ClockResume::kPlusWallClock}) {
    Result<GuestState> state = RestoreGuest(d, how);
    ASSERT_TRUE(state) << state.error().message();
    EXPECT_EQ(state->monotonic_offset_ns, 0);
    EXPECT_EQ(state->start_time_ns, 123u);
  }
}

// Pipes travel in descriptors with the bytes in them: both ends restore connected to one new
// pipe holding those bytes, and the captured pipe keeps them.
TEST(StateCaptureTest, PipesRestoreConnectedWithTheirBytes) {
  signal(SIGPIPE, SIG_IGN);  // as the VMM process does
  FdTable fds;
  int ends[2];
  ASSERT_EQ(pipe2(ends, O_CLOEXEC | O_NONBLOCK), 0);
  OpenFile reader;
  reader.kind = FileKind::kPipe;
  reader.host.Reset(ends[0]);
  reader.flags = O_RDONLY;
  OpenFile writer;
  writer.kind = FileKind::kPipe;
  writer.host.Reset(ends[1]);
  writer.flags = O_WRONLY | O_NONBLOCK;
  ASSERT_EQ(*fds.Install(std::move(reader), false), 3);
  ASSERT_EQ(*fds.Install(std::move(writer), true), 4);
  ASSERT_EQ(write(ends[1], "unread", 6), 6);

  VmDescriptor d = SmallDescriptor();
  d.files = CaptureFiles(fds, 0).value();
  ASSERT_EQ(d.files.fds.size(), 5u);
  const FdRecord& captured = d.files.fds[4];
  EXPECT_EQ(captured.kind, FileKind::kPipe);
  EXPECT_EQ(captured.path, "");
  EXPECT_EQ(captured.flags, O_WRONLY | O_NONBLOCK);
  EXPECT_TRUE(captured.cloexec);
  EXPECT_EQ(captured.offset, 0);
  EXPECT_NE(captured.pipe, 0u);
  EXPECT_EQ(d.files.fds[3].pipe, captured.pipe);
  ASSERT_EQ(d.files.pipes.size(), 1u);
  EXPECT_EQ(d.files.pipes[0].id, captured.pipe);
  EXPECT_EQ(std::string(d.files.pipes[0].contents.begin(), d.files.pipes[0].contents.end()),
            "unread");
  EXPECT_EQ(d.files.pipes[0].capacity, static_cast<uint32_t>(fcntl(ends[0], F_GETPIPE_SZ)));

  Result<GuestState> state = RestoreGuest(d, ClockResume::kFromCapture);  // no root needed
  ASSERT_TRUE(state) << state.error().message();
  const OpenFile* read_end = *state->fds.Get(3);
  const OpenFile* write_end = *state->fds.Get(4);
  EXPECT_EQ(read_end->kind, FileKind::kPipe);
  EXPECT_EQ(read_end->flags, O_RDONLY);
  EXPECT_EQ(*state->fds.GetCloexec(4), true);
  char bytes[16] = {};
  EXPECT_EQ(read(read_end->host_fd(), bytes, sizeof bytes), 6);
  EXPECT_STREQ(bytes, "unread");
  EXPECT_EQ(write(write_end->host_fd(), "x", 1), 1);  // connected to the restored reader
  EXPECT_EQ(read(read_end->host_fd(), bytes, sizeof bytes), 1);
  EXPECT_EQ(bytes[0], 'x');
  EXPECT_EQ(read(ends[0], bytes, sizeof bytes), 6);  // the captured pipe still has its bytes
  for (const OpenFile* end : {read_end, write_end}) {
    EXPECT_NE(fcntl(end->host_fd(), F_GETFL) & O_NONBLOCK, 0);
    EXPECT_EQ(fcntl(end->host_fd(), F_GETFD), FD_CLOEXEC);
  }
}

// The read end alone: its bytes are read, then end of file (no writer is left). The write end
// alone: writes fail with EPIPE (no reader). A pipe end recorded without its pipe (older
// descriptors) gets a pipe of its own without a peer.
TEST(StateCaptureTest, PipeEndsWithoutTheirPeerRestoreWithoutIt) {
  signal(SIGPIPE, SIG_IGN);
  for (const bool keep_reader : {true, false}) {
    SCOPED_TRACE(keep_reader ? "read end kept" : "write end kept");
    int ends[2];
    ASSERT_EQ(pipe2(ends, O_CLOEXEC | O_NONBLOCK), 0);
    ASSERT_EQ(write(ends[1], "abc", 3), 3);
    FdTable fds;
    OpenFile end;
    end.kind = FileKind::kPipe;
    end.host.Reset(keep_reader ? ends[0] : ends[1]);
    end.flags = keep_reader ? O_RDONLY : O_WRONLY;
    close(keep_reader ? ends[1] : ends[0]);
    ASSERT_EQ(*fds.Install(std::move(end), false), 3);
    VmDescriptor d = SmallDescriptor();
    d.files = CaptureFiles(fds, 0).value();
    ASSERT_EQ(d.files.pipes.size(), 1u);
    EXPECT_EQ(d.files.pipes[0].contents.size(), 3u);  // read through /proc for a write end
    Result<GuestState> state = RestoreGuest(d, ClockResume::kFromCapture);
    ASSERT_TRUE(state) << state.error().message();
    const int host = (*state->fds.Get(3))->host_fd();
    char bytes[8];
    if (keep_reader) {
      EXPECT_EQ(read(host, bytes, sizeof bytes), 3);
      EXPECT_EQ(read(host, bytes, sizeof bytes), 0);
    } else {
      EXPECT_EQ(write(host, "x", 1), -1);
      EXPECT_EQ(errno, EPIPE);
    }
    d.files.fds[3].pipe = 0;
    d.files.pipes.clear();
    state = RestoreGuest(d, ClockResume::kFromCapture);
    ASSERT_TRUE(state) << state.error().message();
    if (keep_reader) {
      EXPECT_EQ(read((*state->fds.Get(3))->host_fd(), bytes, sizeof bytes), 0);
    } else {
      EXPECT_EQ(write((*state->fds.Get(3))->host_fd(), "x", 1), -1);
    }
  }
}

// eventfds, timerfds and epoll instances travel in descriptors: their host state is read at
// capture and made again at restore.
class EventObjectCapture : public ::testing::Test {
 protected:
  static constexpr uint64_t kArgs = flurry::testing::SyscallHarness::kScratch;
  int64_t Call(uint64_t nr, uint64_t a0 = 0, uint64_t a1 = 0, uint64_t a2 = 0, uint64_t a3 = 0) {
    return h.Call(nr, a0, a1, a2, a3);
  }
  void Watch(int epfd, int fd, uint32_t events, uint64_t data) {
    const epoll_event event{.events = events, .data = {.u64 = data}};
    ASSERT_TRUE(h.memory.WriteObject(kArgs, event).has_value());
    ASSERT_EQ(Call(SYS_epoll_ctl, static_cast<uint64_t>(epfd), EPOLL_CTL_ADD,
                   static_cast<uint64_t>(fd), kArgs),
              0);
  }
  static const FdRecord& RecordOf(const FilesRecord& files, int fd) {
    for (const FdRecord& r : files.fds) {
      if (r.fd == fd) return r;
    }
    ADD_FAILURE() << "no record of fd " << fd;
    return files.fds.front();
  }

  flurry::testing::SyscallHarness h;
};

TEST_F(EventObjectCapture, SurviveACaptureAndRestore) {
  const int efd = static_cast<int>(Call(SYS_eventfd2, 5, EFD_SEMAPHORE | EFD_NONBLOCK));
  const int tfd = static_cast<int>(Call(SYS_timerfd_create, CLOCK_MONOTONIC, 0));
  const itimerspec hour{.it_interval = {2, 0}, .it_value = {3600, 0}};
  ASSERT_TRUE(h.memory.WriteObject(kArgs, hour).has_value());
  ASSERT_EQ(Call(SYS_timerfd_settime, static_cast<uint64_t>(tfd), 0, kArgs, 0), 0);
  const int due = static_cast<int>(Call(SYS_timerfd_create, CLOCK_BOOTTIME, 0));
  const itimerspec now{.it_interval = {}, .it_value = {0, 1}};
  ASSERT_TRUE(h.memory.WriteObject(kArgs, now).has_value());
  ASSERT_EQ(Call(SYS_timerfd_settime, static_cast<uint64_t>(due), 0, kArgs, 0), 0);
  const int epfd = static_cast<int>(Call(SYS_epoll_create1, EPOLL_CLOEXEC));
  ASSERT_EQ(Call(SYS_pipe2, kArgs + 0x100, 0), 0);
  const int pipe_reader = h.memory.ReadObject<int32_t>(kArgs + 0x100).value();
  Watch(epfd, efd, EPOLLIN, 0xabc);
  Watch(epfd, tfd, EPOLLIN | EPOLLET, 0xdef);
  Watch(epfd, pipe_reader, EPOLLIN, 0x123);
  // A closed fd is no interest any more (the host dropped it); a new file at its number is
  // not watched.
  ASSERT_EQ(Call(SYS_close, static_cast<uint64_t>(pipe_reader)), 0);
  ASSERT_EQ(Call(SYS_dup, static_cast<uint64_t>(efd)), pipe_reader);
  pollfd expired{(*h.state.fds.Get(due))->host_fd(), POLLIN, 0};
  ASSERT_EQ(poll(&expired, 1, 5000), 1);

  const FilesRecord files = CaptureFiles(h.state.fds, h.state.monotonic_offset_ns).value();
  const FdRecord& e = RecordOf(files, efd);
  EXPECT_EQ(e.kind, FileKind::kEventfd);
  EXPECT_EQ(e.event.count, 5u);
  EXPECT_TRUE(e.event.semaphore);
  EXPECT_EQ(e.flags, O_RDWR | O_NONBLOCK);
  const FdRecord& t = RecordOf(files, tfd);
  EXPECT_EQ(t.event.clock, CLOCK_MONOTONIC);
  EXPECT_EQ(t.event.interval_ns, 2 * kSecond);
  const int64_t guest_now = GuestNow(h.state);
  EXPECT_GT(t.event.deadline_ns, guest_now + 3500 * kSecond);  // absolute, on the guest clock
  EXPECT_LE(t.event.deadline_ns, guest_now + 3600 * kSecond);
  EXPECT_EQ(t.event.count, 0u);
  EXPECT_EQ(RecordOf(files, due).event.count, 1u);  // one expiration not yet read
  EXPECT_EQ(RecordOf(files, due).event.deadline_ns, 0);
  const FdRecord& ep = RecordOf(files, epfd);
  ASSERT_EQ(ep.event.interests.size(), 2u);
  EXPECT_EQ(ep.event.interests[0],
            (EpollInterestRecord{.fd = efd, .events = EPOLLIN, .data = 0xabc}));
  EXPECT_EQ(ep.event.interests[1].fd, tfd);
  EXPECT_EQ(ep.event.interests[1].events, static_cast<uint32_t>(EPOLLIN | EPOLLET));

  FdTable restored;
  ASSERT_TRUE(RestoreFiles(files, std::nullopt, restored, nullptr, 0));
  uint64_t count = 0;
  const int restored_efd = (*restored.Get(efd))->host_fd();
  EXPECT_EQ(read(restored_efd, &count, 8), 8);  // a semaphore: one at a time
  EXPECT_EQ(count, 1u);
  itimerspec left{};
  ASSERT_EQ(timerfd_gettime((*restored.Get(tfd))->host_fd(), &left), 0);
  EXPECT_GT(left.it_value.tv_sec, 3500);
  EXPECT_EQ(left.it_interval.tv_sec, 2);
  EXPECT_EQ((*restored.Get(tfd))->event.clock, CLOCK_MONOTONIC);
  EXPECT_EQ(read((*restored.Get(due))->host_fd(), &count, 8), 8);
  EXPECT_EQ(count, 1u);
  // The restored epoll instance watches the restored eventfd, with the guest's data.
  epoll_event event{};
  ASSERT_EQ(epoll_wait((*restored.Get(epfd))->host_fd(), &event, 1, 0), 1);
  EXPECT_EQ(event.data.u64, 0xabcu);
  EXPECT_EQ((*restored.Get(epfd))->event.interests.size(), 2u);
  EXPECT_NE(fcntl((*restored.Get(efd))->host_fd(), F_GETFL) & O_NONBLOCK, 0);
}

// A signalfd travels as its mask and flags; the restored one starts unreadable (the VM's first
// stop syncs it with the signals its descriptor says are pending) and reads as before.
TEST_F(EventObjectCapture, SignalfdsKeepTheirMask) {
  const uint64_t mask = SignalState::Bit(SIGUSR1) | SignalState::Bit(SIGTERM);
  ASSERT_TRUE(h.memory.WriteObject(kArgs, mask).has_value());
  const int sfd = static_cast<int>(
      Call(SYS_signalfd4, static_cast<uint64_t>(-1), kArgs, 8, SFD_NONBLOCK | SFD_CLOEXEC));
  ASSERT_GE(sfd, 0);
  const FilesRecord files = CaptureFiles(h.state.fds, h.state.monotonic_offset_ns).value();
  const FdRecord& s = RecordOf(files, sfd);
  EXPECT_EQ(s.kind, FileKind::kSignalfd);
  EXPECT_EQ(s.event.signal_mask, mask);
  EXPECT_EQ(s.flags, O_RDWR | O_NONBLOCK);
  EXPECT_TRUE(s.cloexec);

  GuestState restored;
  ASSERT_TRUE(RestoreFiles(files, std::nullopt, restored.fds, nullptr, 0));
  OpenFile* file = *restored.fds.Get(sfd);
  EXPECT_EQ(file->kind, FileKind::kSignalfd);
  EXPECT_EQ(file->event.signal_mask, mask);
  pollfd ready{file->host_fd(), POLLIN, 0};
  EXPECT_EQ(poll(&ready, 1, 0), 0);
  RaiseSignal(restored.signals, SIGTERM, PendingSignalInfo{.code = 0, .pid = 7});
  SyncSignalfds(restored);
  EXPECT_EQ(poll(&ready, 1, 0), 1);
}

// fds sharing one open file (dup) share it again after a restore: one eventfd, not two.
TEST_F(EventObjectCapture, DupedFdsStayOneOpenFile) {
  const int efd = static_cast<int>(Call(SYS_eventfd2, 5, EFD_NONBLOCK));
  const int copy = static_cast<int>(Call(SYS_dup, static_cast<uint64_t>(efd)));
  const FilesRecord files = CaptureFiles(h.state.fds, h.state.monotonic_offset_ns).value();
  EXPECT_EQ(RecordOf(files, copy).shares_with, efd);
  EXPECT_EQ(RecordOf(files, efd).shares_with, -1);
  FdTable restored;
  ASSERT_TRUE(RestoreFiles(files, std::nullopt, restored, nullptr, 0));
  EXPECT_EQ(*restored.Get(efd), *restored.Get(copy));
  uint64_t count = 0;
  EXPECT_EQ(read((*restored.Get(copy))->host_fd(), &count, 8), 8);
  EXPECT_EQ(count, 5u);
  EXPECT_EQ(read((*restored.Get(efd))->host_fd(), &count, 8), -1);  // taken: one counter
}

// A timerfd's deadline is absolute: restored in a VM whose clock is 10 s further on (a
// checkpoint's clone made later), it is due 10 s sooner, and periods passed meanwhile are
// expirations.
TEST_F(EventObjectCapture, TimerfdDeadlinesAreAbsolute) {
  h.state.monotonic_offset_ns = 100 * kSecond;
  const int tfd = static_cast<int>(Call(SYS_timerfd_create, CLOCK_MONOTONIC, TFD_NONBLOCK));
  const itimerspec minute{.it_interval = {}, .it_value = {60, 0}};
  ASSERT_TRUE(h.memory.WriteObject(kArgs, minute).has_value());
  ASSERT_EQ(Call(SYS_timerfd_settime, static_cast<uint64_t>(tfd), 0, kArgs, 0), 0);
  const int every = static_cast<int>(Call(SYS_timerfd_create, CLOCK_MONOTONIC, TFD_NONBLOCK));
  const itimerspec second{.it_interval = {1, 0}, .it_value = {1, 0}};
  ASSERT_TRUE(h.memory.WriteObject(kArgs, second).has_value());
  ASSERT_EQ(Call(SYS_timerfd_settime, static_cast<uint64_t>(every), 0, kArgs, 0), 0);
  const FilesRecord files = CaptureFiles(h.state.fds, h.state.monotonic_offset_ns).value();
  FdTable restored;
  ASSERT_TRUE(RestoreFiles(files, std::nullopt, restored, nullptr, 110 * kSecond));
  itimerspec left{};
  ASSERT_EQ(timerfd_gettime((*restored.Get(tfd))->host_fd(), &left), 0);
  EXPECT_GE(left.it_value.tv_sec, 45);
  EXPECT_LT(left.it_value.tv_sec, 50);
  uint64_t expirations = 0;
  ASSERT_EQ(read((*restored.Get(every))->host_fd(), &expirations, 8), 8);
  EXPECT_GE(expirations, 9u);  // its first 9 or 10 seconds have passed
  EXPECT_LE(expirations, 11u);
}

TEST_F(EventObjectCapture, DevicesAreReopenedByPath) {
  ASSERT_TRUE(h.memory.Write(kArgs, "/dev/zero", 10).has_value());
  const int fd = static_cast<int>(
      Call(SYS_openat, static_cast<uint64_t>(AT_FDCWD), kArgs, O_RDONLY | O_CLOEXEC, 0));
  ASSERT_GE(fd, 0);
  const FilesRecord files = CaptureFiles(h.state.fds, h.state.monotonic_offset_ns).value();
  EXPECT_EQ(RecordOf(files, fd).kind, FileKind::kDevice);
  EXPECT_EQ(RecordOf(files, fd).path, "/dev/zero");
  FdTable restored;
  ASSERT_TRUE(RestoreFiles(files, std::nullopt, restored, nullptr, 0));  // no root needed
  uint32_t word = 7;
  EXPECT_EQ(read((*restored.Get(fd))->host_fd(), &word, sizeof word), 4);
  EXPECT_EQ(word, 0u);
  FilesRecord forged = files;
  for (FdRecord& r : forged.fds) {
    if (r.fd == fd) r.path = "/dev/mem";
  }
  EXPECT_FALSE(RestoreFiles(forged, std::nullopt, restored, nullptr, 0));
}

}  // namespace
}  // namespace flurry
