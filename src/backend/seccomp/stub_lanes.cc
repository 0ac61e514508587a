// StubProcess's lanes: adding a lane's thread, ending the other lanes, and the kernel's count
// of the stub's threads that guards both (docs/protocols/stub.md, "Lanes", "The fork token").
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <ctime>
#include <string>
#include <string_view>

#include "backend/seccomp/stub_process.h"
#include "base/file_io.h"

namespace flurry {

Result<int> StubProcess::ParseThreadCount(std::string_view status) {
  constexpr std::string_view kKey = "Threads:";
  size_t at = status.starts_with(kKey) ? 0 : status.find("\nThreads:");
  if (at == std::string_view::npos) return Fail("no Threads: line in /proc/PID/status");
  at += status[at] == '\n' ? kKey.size() + 1 : kKey.size();
  while (at < status.size() && (status[at] == ' ' || status[at] == '\t')) ++at;
  int count = 0;
  size_t digits = 0;
  for (; at < status.size() && status[at] >= '0' && status[at] <= '9'; ++at, ++digits) {
    if (count > 1'000'000) return Fail("a Threads: count out of range in /proc/PID/status");
    count = count * 10 + (status[at] - '0');
  }
  if (digits == 0 || (at < status.size() && status[at] != '\n')) {
    return Fail("a malformed Threads: line in /proc/PID/status");
  }
  return count;
}

Result<int> StubProcess::ThreadCount() const {
  const std::string text =
      FLURRY_TRY(ReadSmallFile(fmt::format("/proc/{}/status", pid_), {.max_bytes = 64 * 1024}));
  // The pid could have been reused if the stub died: make sure the count was the stub's.
  if (!Alive()) return Fail("the stub died: {}", DescribeDeath());
  return ParseThreadCount(text);
}

Result<void> StubProcess::CheckThreads(int expected, const char* doing) const {
  const int count = FLURRY_TRY_CTX(ThreadCount(), doing);
  if (count == expected) return {};
  return Fail(
      "{}: the kernel counts {} threads in the guest's stub, the VMM made {} ({})", doing, count,
      expected,
      count > expected ? "the stub has threads the VMM did not make" : "a lane's thread ended");
}

Result<void> StubProcess::AddLane(int from_lane, int new_lane) {
  if (new_lane <= 0 || new_lane >= FLURRY_STUB_MAX_LANES) {
    return Fail("lane {} is out of range (1..{})", new_lane, FLURRY_STUB_MAX_LANES - 1);
  }
  if (LaneExists(new_lane)) return Fail("lane {} exists already", new_lane);
  if (!LaneExists(from_lane)) return Fail("the stub has no lane {}", from_lane);
  // The token goes through from_lane's page: no other thread may run guest code meanwhile.
  // Lanes never resumed wait in their first stop, but only while no lane at all has run since
  // they were made (guest code on any lane can post a RESUME on another's page). So a batch
  // starts from a lone lane, and ends at the first RESUME. The kernel's count rules out threads
  // the VMM did not make.
  if (lanes_ == LaneBit(from_lane)) {
    resumed_ = 0;  // a lone lane: what it ran before does not matter
  } else if (resumed_ != 0) {
    return Fail(
        "adding lane {}: lane {} has run guest code since the other lanes were made (lanes are "
        "added in one batch before any of them runs; end the other lanes first)",
        new_lane, __builtin_ctz(resumed_));
  }
  FLURRY_TRY(CheckThreads(LaneCount(lanes_), "adding a lane"));
  // The new lane's page as a fresh one (whatever the guest, or an ended lane, left there): it
  // announces READY.
  volatile flurry_stub_shared& fresh = shared(new_lane);
  fresh.event = 0;
  fresh.command = 0;
  fresh.resume_flags = 0;
  fresh.vmm_waiting = 0;
  fresh.stub_waiting = 0;
  fresh.result = 0;
  for (int i = 0; i < 4; ++i) fresh.args[i] = 0;
  fresh.xsave_size = 0;
  resumed_ &= ~LaneBit(new_lane);
  __atomic_store_n(&fresh.turn, FLURRY_STUB_TURN_GUEST, __ATOMIC_SEQ_CST);
  volatile flurry_stub_shared& s = shared(from_lane);
  s.args[0] = static_cast<uint64_t>(new_lane);
  s.args[1] = fork_token_;
  Result<int64_t> tid = Command(from_lane, FLURRY_STUB_CMD_ADD_LANE);
  s.args[1] = 0;
  if (!tid) return Fail("starting lane {}: {}", new_lane, tid.error().message());
  if (*tid <= 0) {
    return FailErrno(*tid < 0 && *tid > -4096 ? static_cast<int>(-*tid) : EPROTO,
                     fmt::format("starting lane {}", new_lane));
  }
  lanes_ |= LaneBit(new_lane);
  lane_tids_[static_cast<size_t>(new_lane)] = static_cast<pid_t>(*tid);
  if (Result<void> ready = WaitForAnnouncement(new_lane, FLURRY_STUB_EVENT_READY); !ready) {
    // A thread that did not come up cannot be driven, nor taken back: the stub is unusable.
    syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
    return Fail("starting lane {}: {}", new_lane, ready.error().message());
  }
  return {};
}

Result<void> StubProcess::EndOtherLanes(int lane) {
  if (!LaneExists(lane)) return Fail("the stub has no lane {}", lane);
  if (lane != 0) {
    return Fail(
        "ending the other lanes from lane {}: lane 0 is the stub's main thread, which cannot end "
        "alone; end them from lane 0",
        lane);
  }
  const LaneSet others = lanes_ & ~LaneBit(lane);
  if (others == 0) return CheckThreads(1, "ending the other lanes");
  for (int k = 0; k < FLURRY_STUB_MAX_LANES; ++k) {
    if (others & LaneBit(k)) Post(k, FLURRY_STUB_CMD_END_LANE);
  }
  lanes_ &= ~others;
  resumed_ &= ~others;
  // No answer comes (the threads are gone): the kernel's count says when they are.
  const auto deadline = std::chrono::steady_clock::now() + kEndLanesLimit;
  for (;;) {
    if (!Alive()) {
      return Fail("ending the other lanes: the guest's stub process died: {}", DescribeDeath());
    }
    Result<int> count = ThreadCount();
    if (count && *count == 1) return {};
    if (std::chrono::steady_clock::now() > deadline) {
      syscall(SYS_pidfd_send_signal, pidfd_.get(), SIGKILL, nullptr, 0);
      return Fail(
          "ending the other lanes: the guest's stub still has {} threads after {} s (the guest "
          "tampered with a lane's page); stopped it",
          count ? std::to_string(*count) : count.error().message(), kEndLanesLimit.count());
    }
    timespec pause{0, 1'000'000};
    nanosleep(&pause, nullptr);
  }
}

}  // namespace flurry
