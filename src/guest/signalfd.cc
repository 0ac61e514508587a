#include "guest/signalfd.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <cstring>
#include <memory>
#include <vector>

#include "guest/posix_timers.h"
#include "guest/signal_state.h"

namespace flurry {
namespace {

// Makes the host eventfd readable while `pending` (the mask's pending signals) is not 0. A
// signal that was not pending at the last sync writes to it again even if it was readable:
// edge-triggered epoll sees each new signal, as Linux's signalfd wakes its waiters on each.
void SetReady(OpenFile& file, uint64_t pending) {
  const uint64_t before = file.event.signal_ready;
  if (pending == before) return;
  uint64_t value = 1;
  if (pending == 0) {
    // Host eventfd, non-blocking: the read empties it (EAGAIN: it was empty).
    if (::read(file.host_fd(), &value, sizeof value) == sizeof value || errno == EAGAIN) {
      file.event.signal_ready = 0;
    }
    return;
  }
  if ((pending & ~before) == 0) {  // fewer than before, none new: no edge
    file.event.signal_ready = pending;
    return;
  }
  // Fails only at a count of 2^64 - 2 (never: each write adds 1, each unready read empties).
  if (::write(file.host_fd(), &value, sizeof value) == sizeof value) {
    file.event.signal_ready = pending;
  }
}

}  // namespace

uint64_t SignalfdReadable(const GuestState& state, uint64_t mask) {
  return state.signals.AllPending() & mask;
}

void SyncSignalfds(GuestState& state, bool thread_running) {
  std::vector<std::weak_ptr<OpenFile>>& signalfds = state.fds.signalfds();
  if (signalfds.empty()) return;
  const uint64_t pending = thread_running ? state.signals.AllPending() : state.signals.pending;
  std::erase_if(signalfds, [&](const std::weak_ptr<OpenFile>& known) {
    const std::shared_ptr<OpenFile> file = known.lock();
    if (file == nullptr) return true;  // closed
    SetReady(*file, pending & file->event.signal_mask);
    return false;
  });
}

signalfd_siginfo SignalfdInfoOf(int signal, const PendingSignalInfo& info) {
  signalfd_siginfo out;
  std::memset(&out, 0, sizeof out);
  out.ssi_signo = static_cast<uint32_t>(signal);
  out.ssi_code = info.code;
  out.ssi_pid = static_cast<uint32_t>(info.pid);
  out.ssi_uid = info.uid;
  out.ssi_addr = info.addr;
  if (info.code == kSiTimer) {
    out.ssi_tid = static_cast<uint32_t>(info.timer_id);
    out.ssi_overrun = static_cast<uint32_t>(info.overrun);
    out.ssi_int = static_cast<int32_t>(info.value);
    out.ssi_ptr = info.value;
  }
  return out;
}

Result<size_t> TakeSignalfdSignals(GuestState& state, OpenFile& file, std::span<uint8_t> out) {
  constexpr size_t kRecord = sizeof(signalfd_siginfo);
  if (out.size() < kRecord) return FailErrno(EINVAL, "signalfd read of fewer than 128 bytes");
  size_t filled = 0;
  while (out.size() - filled >= kRecord) {
    const int signal = NextSignalToTake(state.signals, file.event.signal_mask);
    if (signal == 0) break;
    const signalfd_siginfo info = SignalfdInfoOf(signal, TakeSignal(state, signal));
    std::memcpy(out.data() + filled, &info, kRecord);
    filled += kRecord;
  }
  SetReady(file, SignalfdReadable(state, file.event.signal_mask));
  return filled;
}

Result<void> RenewSignalfds(FdTable& fds) {
  for (const std::weak_ptr<OpenFile>& known : fds.signalfds()) {
    const std::shared_ptr<OpenFile> file = known.lock();
    if (file == nullptr || !file->host.valid()) continue;
    // Every guest fd sharing this open file holds this host fd: one dup3 renews them all.
    UniqueFd fresh(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
    if (!fresh.valid()) return FailErrno("a new eventfd for a signalfd");
    if (dup3(fresh.get(), file->host.get(), O_CLOEXEC) < 0) {
      return FailErrno(
          fmt::format("putting a signalfd's new eventfd at host fd {}", file->host.get()));
    }
    file->event.signal_ready = 0;
  }
  return {};
}

}  // namespace flurry
