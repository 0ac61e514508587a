// eventfds, timerfds and epoll instances in VM descriptors: what a capture reads from their
// host fds (an eventfd's count and a timerfd's setting live in the host kernel, not in
// OpenFile) and how a restore makes them again. Used by CaptureFiles and RestoreFiles
// (state_capture.h) on the thread that captures or restores.
#pragma once

#include "base/error.h"
#include "base/unique_fd.h"
#include "guest/fd_table.h"
#include "snapshot/vm_descriptor.h"

namespace flurry {

// The state of `file` (an eventfd, timerfd or epoll instance of `fds`) now, in a VM whose
// monotonic clocks read `monotonic_offset_ns` ahead of the host's. An epoll instance's
// interests are those whose guest fd still holds the file it was added as.
EventRecord CaptureEventObject(const OpenFile& file, const FdTable& fds,
                               int64_t monotonic_offset_ns);

// A new host eventfd or timerfd with `record`'s state (count, setting, unread expirations) in
// a VM whose offset is `monotonic_offset_ns`, or an empty epoll instance
// (RestoreEpollInterests fills it once every fd is open). Host fds are O_CLOEXEC and
// O_NONBLOCK, as the syscalls make them.
Result<UniqueFd> MakeEventObject(FileKind kind, const EventRecord& record,
                                 int64_t monotonic_offset_ns);

// Registers `record`'s interests in `epoll` (restored into `fds`), with the host fds `fds`
// now holds, and records them in `epoll.event`. One this host refuses (EPERM: its stdin is a
// regular file, say) is left out with a notice on stderr.
Result<void> RestoreEpollInterests(OpenFile& epoll, const EventRecord& record, const FdTable& fds);

}  // namespace flurry
