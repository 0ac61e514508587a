// StubProcess: one seccomp-backend stub (stub/stub.c) — the host process a guest's code runs
// in — and the pages the VMM shares with it (stub/stub_abi.h).
//
// Lanes: the stub runs guest code on up to FLURRY_STUB_MAX_LANES threads ("lanes"), each with
// a hand-off page of its own: shared(lane). A stub starts with lane 0; AddLane() starts more; a
// forked stub has only the lane that forked. Every per-lane call takes the lane number; the
// ones without default to lane 0.
//
// Owner: the SeccompBackend. Thread: the VM's run thread, except Kick() (any thread). A
// StubProcess kills its stub when destroyed, unless Release()d (after a fork() of the VMM, the
// side that does not drive the stub lets go of it without killing it).
#pragma once

#include <sys/types.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <string_view>
#include <utility>

#include "backend/backend.h"
#include "backend/seccomp/stub/stub_abi.h"
#include "base/error.h"
#include "base/mapping.h"
#include "base/unique_fd.h"

namespace flurry {

class StubProcess {
 public:
  // Starts a stub with guest RAM laid out as `layout` (empty), in new namespaces, and waits
  // until it is ready (stopped, waiting for its first RESUME). `namespaces` says which were
  // made ("net,ipc,uts,mount" or "none" where the host does not allow them).
  static Result<StubProcess> Launch(const GuestLayout& layout);

  StubProcess() = default;
  StubProcess(StubProcess&& other) noexcept;
  StubProcess& operator=(StubProcess&& other) noexcept;
  ~StubProcess();

  bool valid() const { return pidfd_.valid(); }
  pid_t pid() const { return pid_; }
  const char* namespaces() const { return namespaces_; }
  // Lane `lane`'s hand-off page (0..FLURRY_STUB_MAX_LANES-1; page 0 also holds the setup
  // block, vmm_alive and the doorbell).
  volatile flurry_stub_shared& shared(int lane = 0) const {
    return *reinterpret_cast<volatile flurry_stub_shared*>(
        static_cast<uint8_t*>(page_.data()) + static_cast<size_t>(lane) * FLURRY_STUB_LANE_SIZE);
  }

  // A set of lanes: bit k is lane k.
  using LaneSet = uint32_t;
  static constexpr LaneSet LaneBit(int lane) { return LaneSet{1} << lane; }
  // The lanes that have a stub thread.
  LaneSet lanes() const { return lanes_; }
  // The lanes resumed (posted CMD_RESUME) since the current batch of lanes started (AddLane from
  // a lone lane).
  LaneSet resumed() const { return resumed_; }
  static int LaneCount(LaneSet set) { return __builtin_popcount(set); }
  // The stub's threads as the kernel counts them (/proc/PID/status "Threads:").
  Result<int> ThreadCount() const;
  // The "Threads:" line of a /proc/PID/status text (an error if absent or malformed).
  static Result<int> ParseThreadCount(std::string_view status);
  bool LaneExists(int lane) const {
    return lane >= 0 && lane < FLURRY_STUB_MAX_LANES && (lanes_ & LaneBit(lane)) != 0;
  }

  // Hands the lane's page to its thread with `command` (the lane must be stopped).
  void Post(int lane, uint32_t command);
  void Post(uint32_t command) { Post(0, command); }
  // Waits until the lane hands its page back; returns the event it reports. Fails if the stub
  // dies, or if it does not answer a Kick() within kKickAnswerLimit (a guest that replaced the
  // stub's shared page; the stub is killed then). Host signals do not end the wait.
  Result<uint32_t> Wait(int lane);
  Result<uint32_t> Wait() { return Wait(0); }
  static constexpr std::chrono::seconds kKickAnswerLimit{10};
  // Waits until any lane of `lanes` (existing ones; at least one; the caller passes the lanes
  // it resumed and has not had back yet) hands its page back; returns the lane and its event. A
  // lane whose page is the VMM's already is returned at once; among several, the first after the
  // one returned last (round robin). Fails as Wait() does.
  Result<std::pair<int, uint32_t>> WaitAny(LaneSet lanes);
  // Post + Wait for a command that answers EVENT_DONE; returns `result`.
  Result<int64_t> Command(int lane, uint32_t command);
  Result<int64_t> Command(uint32_t command) { return Command(0, command); }

  // The fork token (CMD_ADD_LANE, CMD_FORK) is only ever sent while no thread of the stub but
  // the commanding lane's may run guest code (docs/protocols/stub.md, "The fork token"): every
  // other lane has never been resumed, and the kernel's thread count (/proc/PID/status) is the
  // number of lanes the VMM made. Lane 0 is the stub's main thread; it never ends alone.

  // Starts lane `new_lane` (1..FLURRY_STUB_MAX_LANES-1, not existing) as a new stub thread,
  // through lane `from_lane` (stopped); returns when the new lane is ready (stopped, waiting for
  // its first RESUME, which must load its registers). Lanes are added in one batch, which
  // starts from a lone lane: refused once any lane has been resumed since the batch started
  // (EndOtherLanes makes way for another), or when the stub has threads the VMM did not make.
  Result<void> AddLane(int from_lane, int new_lane);

  // Ends every lane but `lane`, which must be lane 0 (the main thread); all must be stopped.
  // Waits until the kernel shows one thread left (kEndLanesLimit; the stub is killed if not).
  Result<void> EndOtherLanes(int lane);
  static constexpr std::chrono::seconds kEndLanesLimit{10};

  // The stub forks from lane `lane` (it must be stopped, and the stub's only lane and thread:
  // EndOtherLanes first); returns the child, stopped and announced on its own pages, not yet
  // Adopt()ed. The child has only that lane (same number). With `die_with_parent` the child
  // dies when this stub does.
  Result<StubProcess> Fork(int lane, bool die_with_parent);
  Result<StubProcess> Fork(bool die_with_parent) { return Fork(0, die_with_parent); }
  // In the process that will drive this stub: points the process's VMM-alive word at this
  // stub's page (the stub ends itself when this process dies; vmm_alive.h).
  Result<void> Adopt();
  // /proc/PID/mem and /proc/PID/pagemap of the stub.
  Result<UniqueFd> OpenProc(const char* what) const;

  // A stub launched with GuestLayout::on_demand: takes its userfaultfd (once; the stub's own
  // copy is closed, by lane `lane`, which must be stopped).
  Result<UniqueFd> TakeUserfault(int lane = 0);

  // Any thread: interrupts the guest: one lane that runs guest code stops with EVENT_KICKED
  // (if none runs, the next lane to run stops at once).
  void Kick();
  // The run thread: interrupts lane `lane` (the kick goes to its thread alone).
  void KickLane(int lane);
  // Forgets the stub without killing it.
  void Release();
  // In a process forked from the one that adopted this stub: forgets it without touching its
  // VMM-alive word (that word is the other process's).
  void ForgetInherited() {
    adopted_ = false;
    Release();
  }

 private:
  friend class StubProcessTestPeer;  // stub_process_test: fakes a thread the VMM did not make
  void Reset();
  // Whether the stub process still runs (its pidfd not readable).
  bool Alive() const;
  Result<void> WaitForAnnouncement(int lane, uint32_t event);
  // Between the timed waits of Wait and WaitAny: fails if the stub died or let a kick go
  // unanswered too long (and kills it then).
  Result<void> CheckWhileWaiting();
  // Fails unless the kernel counts exactly `expected` threads in the stub.
  Result<void> CheckThreads(int expected, const char* doing) const;
  std::string DescribeDeath() const;

  pid_t pid_ = -1;
  UniqueFd pidfd_;
  UniqueFd page_fd_;  // the shared area's memfd (all lanes' pages)
  Mapping page_;
  LaneSet lanes_ = 1;  // lanes with a stub thread
  // The host tid of each lane's thread (lane 0: the stub's main thread, pid_). The stub shares
  // the VMM's PID namespace; a tid is only ever used with tgkill(pid_, tid), which the kernel
  // refuses for a thread of another process.
  std::array<pid_t, FLURRY_STUB_MAX_LANES> lane_tids_{};
  LaneSet resumed_ = 0;  // lanes posted CMD_RESUME since the batch started
  int last_any_ = -1;    // the lane WaitAny returned last
  uint64_t fork_token_ = 0;
  bool adopted_ = false;
  // CLOCK_MONOTONIC ns of the oldest Kick() not yet answered by a stop (0: none).
  std::atomic<int64_t> kicked_at_ns_{0};
  const char* namespaces_ = "none";
};

}  // namespace flurry
