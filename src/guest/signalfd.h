// signalfd in the VMM: a guest signalfd is a host eventfd (FileKind::kSignalfd) that the VMM
// keeps readable while a signal of its mask is pending, so poll, select and epoll wait for it
// as for any other fd (without POLLOUT: syscalls_poll.cc, syscalls_epoll.cc); a read takes the
// pending signals (as rt_sigtimedwait does) and returns a struct signalfd_siginfo for each.
// Not as Linux: a parked thread's own signals (tgkill) make no signalfd readable for poll or
// epoll (a read parked on one is woken by them: ThreadBlock's signal_set); docs/design.md
// lists the rest.
//
// Over GuestState and its fds' host eventfds; called on the run thread: SyncSignalfds at every
// stop where pending signals may have changed, before a syscall and before parked threads'
// fds are polled. Readiness is as of the last sync (a signal raised by a syscall shows at the
// next stop, before the guest's next syscall).
#pragma once

#include <sys/signalfd.h>

#include <cstdint>
#include <span>

#include "base/error.h"
#include "guest/guest_state.h"

namespace flurry {

static_assert(sizeof(signalfd_siginfo) == 128, "struct signalfd_siginfo is 128 bytes on x86-64");

// Makes each signalfd's host eventfd readable if a signal of its mask is pending for the
// process or, with `thread_running`, the running thread (state.signals.thread_pending is stale
// while no thread runs), unreadable otherwise; a signal newly pending writes to it again (a
// new edge for EPOLLET). Walks the table's open signalfds only (FdTable::signalfds): nothing
// in a VM without one.
void SyncSignalfds(GuestState& state, bool thread_running = true);

// The signals a signalfd of `mask` would return now: the process's pending ones and the
// running thread's.
uint64_t SignalfdReadable(const GuestState& state, uint64_t mask);

// A read of `file` (a signalfd) into `out`: takes pending signals of its mask in Linux's order
// (NextSignalToTake: the running thread's own first), one signalfd_siginfo each, as many as
// fit. Returns the bytes filled: 0 when none is pending. EINVAL when `out`
// has room for none.
Result<size_t> TakeSignalfdSignals(GuestState& state, OpenFile& file, std::span<uint8_t> out);

// What a read returns for `signal` taken as `info` says.
signalfd_siginfo SignalfdInfoOf(int signal, const PendingSignalInfo& info);

// In a process forked from another (a guest fork): each signalfd's host eventfd is replaced by
// a new one at the same host fd number, since it reads the signals of the process that reads
// it and the parent's eventfd tells the parent's. An epoll instance both processes share keeps
// watching the parent's (a limit: docs/design.md).
Result<void> RenewSignalfds(FdTable& fds);

}  // namespace flurry
