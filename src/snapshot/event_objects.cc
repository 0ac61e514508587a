#include "snapshot/event_objects.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>

#include "guest/guest_time.h"

namespace flurry {
namespace {

// linux/timerfd.h's TFD_IOC_SET_TICKS (that header clashes with glibc's sys/timerfd.h): sets a
// timerfd's unread expirations. Only in kernels built with CONFIG_CHECKPOINT_RESTORE.
constexpr unsigned long kTimerfdSetTicks = _IOW('T', 0, uint64_t);

// Deadlines in descriptors stay below 2^62 ns (descriptor_validate.cc).
constexpr int64_t kFarNs = int64_t{1} << 62;

// The number after `key` in /proc/self/fdinfo/<fd> (in `base`), or 0 when the kernel does
// not say.
uint64_t FdInfoNumber(int fd, std::string_view key, int base) {
  std::ifstream info("/proc/self/fdinfo/" + std::to_string(fd));
  std::string line;
  while (std::getline(info, line)) {
    if (!line.starts_with(key)) continue;
    std::string_view rest = std::string_view(line).substr(key.size());
    while (!rest.empty() && rest.front() == ' ') rest.remove_prefix(1);
    uint64_t value = 0;
    std::from_chars(rest.data(), rest.data() + rest.size(), value, base);
    return value;
  }
  return 0;
}

}  // namespace

EventRecord CaptureEventObject(const OpenFile& file, const FdTable& fds,
                               int64_t monotonic_offset_ns) {
  EventRecord record;
  switch (file.kind) {
    case FileKind::kEventfd:
      record.semaphore = file.event.semaphore;
      record.count = FdInfoNumber(file.host_fd(), "eventfd-count:", 16);
      break;
    case FileKind::kTimerfd: {
      record.clock = file.event.clock;
      itimerspec now{};
      if (timerfd_gettime(file.host_fd(), &now) == 0) {
        const int64_t left = TimespecNs(now.it_value);
        if (left > 0) {
          // Saturated below 2^62 (what a descriptor holds): as good as never.
          const int64_t at = GuestClockNs(record.clock, monotonic_offset_ns);
          record.deadline_ns = left >= kFarNs - at ? kFarNs - 1 : at + left;
        }
        record.interval_ns = TimespecNs(now.it_interval);
      }
      record.count = FdInfoNumber(file.host_fd(), "ticks:", 10);
      break;
    }
    case FileKind::kEpoll: {
      const auto& entries = fds.entries();
      for (const EpollInterest& i : file.event.interests) {
        const auto held = i.file.lock();
        if (held == nullptr || i.fd < 0 || static_cast<size_t>(i.fd) >= entries.size() ||
            entries[static_cast<size_t>(i.fd)].file != held) {
          continue;
        }
        record.interests.push_back({.fd = i.fd, .events = i.events, .data = i.data});
      }
      break;
    }
    case FileKind::kSignalfd:
      record.signal_mask = file.event.signal_mask;
      break;
    default:
      break;
  }
  return record;
}

Result<UniqueFd> MakeEventObject(FileKind kind, const EventRecord& record,
                                 int64_t monotonic_offset_ns) {
  switch (kind) {
    case FileKind::kEventfd: {
      UniqueFd fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK | (record.semaphore ? EFD_SEMAPHORE : 0)));
      if (!fd.valid()) return FailErrno("making an eventfd");
      if (record.count != 0 && write(fd.get(), &record.count, sizeof record.count) < 0) {
        return FailErrno("setting an eventfd's count");
      }
      return fd;
    }
    case FileKind::kTimerfd: {
      UniqueFd fd(timerfd_create(record.clock, TFD_CLOEXEC | TFD_NONBLOCK));
      if (!fd.valid()) return FailErrno("making a timerfd");
      uint64_t ticks = record.count;
      int64_t next = record.deadline_ns;
      const int64_t now = GuestClockNs(record.clock, monotonic_offset_ns);
      if (next != 0 && next <= now) {
        // Passed since the capture (a checkpoint's clone made later): the expirations missed
        // are unread ticks, and a periodic timer goes on from its next period.
        const int64_t period = record.interval_ns;
        const int64_t missed = period > 0 ? (now - next) / period + 1 : 1;
        ticks += static_cast<uint64_t>(missed);
        next = period > 0 && missed < (kFarNs - next) / period ? next + missed * period : 0;
      }
      if (next != 0) {
        itimerspec setting{
            .it_interval = NsTimespec(record.interval_ns),
            .it_value = HostDeadline(record.clock, NsTimespec(next), monotonic_offset_ns)};
        if (setting.it_value.tv_sec == 0 && setting.it_value.tv_nsec == 0) {
          setting.it_value.tv_nsec = 1;
        }
        if (timerfd_settime(fd.get(), TFD_TIMER_ABSTIME, &setting, nullptr) != 0) {
          return FailErrno("arming a timerfd");
        }
      }
      // After arming (which clears them).
      if (ticks != 0 && ioctl(fd.get(), kTimerfdSetTicks, &ticks) != 0 && next == 0) {
        // Without the ioctl, unread expirations are one due at once (their count is lost).
        const itimerspec due{.it_interval = {}, .it_value = {0, 1}};
        timerfd_settime(fd.get(), 0, &due, nullptr);
      }
      return fd;
    }
    case FileKind::kEpoll: {
      UniqueFd fd(epoll_create1(EPOLL_CLOEXEC));
      if (!fd.valid()) return FailErrno("making an epoll instance");
      return fd;
    }
    case FileKind::kSignalfd: {
      // Unreadable: the VM's first stop makes it readable if a signal of its mask is pending.
      UniqueFd fd(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
      if (!fd.valid()) return FailErrno("making a signalfd's eventfd");
      return fd;
    }
    default:
      return Fail("kind {} is no event object", static_cast<int>(kind));
  }
}

Result<void> RestoreEpollInterests(OpenFile& epoll, const EventRecord& record, const FdTable& fds) {
  for (const EpollInterestRecord& i : record.interests) {
    const auto& entries = fds.entries();
    if (i.fd < 0 || static_cast<size_t>(i.fd) >= entries.size() ||
        entries[static_cast<size_t>(i.fd)].file == nullptr) {
      return Fail("epoll interest in fd {}, which is not open", i.fd);
    }
    const std::shared_ptr<OpenFile>& target = entries[static_cast<size_t>(i.fd)].file;
    epoll_event event{.events = i.events, .data = {.u64 = i.data}};
    if (epoll_ctl(epoll.host_fd(), EPOLL_CTL_ADD, target->host_fd(), &event) != 0) {
      // This host's file refuses (stdin a regular file here, say): the VM goes on without
      // that interest, as its epoll_ctl would have failed here.
      (void)!dprintf(2, "flurry: epoll fd watched fd %d, which this host cannot watch: %s\n", i.fd,
                     strerror(errno));
      continue;
    }
    epoll.event.interests.push_back(
        {.fd = i.fd, .events = i.events, .data = i.data, .file = target});
  }
  return {};
}

}  // namespace flurry
