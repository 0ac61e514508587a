// StubProcess: one seccomp-backend stub (stub/stub.c) — the host process a guest's code runs
// in — and the page the VMM shares with it (stub/stub_abi.h).
//
// Owner: the SeccompBackend. Thread: the VM's run thread, except Kick() (any thread). A
// StubProcess kills its stub when destroyed, unless Release()d (after a fork() of the VMM, the
// side that does not drive the stub lets go of it without killing it).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <chrono>
#include <cstdint>

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
  volatile flurry_stub_shared& shared() const {
    return *reinterpret_cast<volatile flurry_stub_shared*>(page_.data());
  }

  // Hands the page to the stub with `command` (the stub must be stopped).
  void Post(uint32_t command);
  // Waits until the stub hands the page back; returns the event it reports. Fails if the stub
  // dies, or if it does not answer a Kick() within kKickAnswerLimit (a guest that replaced the
  // stub's shared page; the stub is killed then). Host signals do not end the wait.
  Result<uint32_t> Wait();
  static constexpr std::chrono::seconds kKickAnswerLimit{10};
  // Post + Wait for a command that answers EVENT_DONE; returns `result`.
  Result<int64_t> Command(uint32_t command);

  // The stub forks (it must be stopped); returns the child, stopped and announced on a page of
  // its own, not yet Adopt()ed. With `die_with_parent` the child dies when this stub does.
  Result<StubProcess> Fork(bool die_with_parent);
  // In the process that will drive this stub: points the process's VMM-alive word at this
  // stub's page (the stub ends itself when this process dies; vmm_alive.h).
  Result<void> Adopt();
  // /proc/PID/mem and /proc/PID/pagemap of the stub.
  Result<UniqueFd> OpenProc(const char* what) const;

  // A stub launched with GuestLayout::on_demand: takes its userfaultfd (once; the stub's own
  // copy is closed). The stub must be stopped.
  Result<UniqueFd> TakeUserfault();

  // Any thread: interrupts the guest (the stub stops with EVENT_KICKED).
  void Kick();
  // Forgets the stub without killing it.
  void Release();
  // In a process forked from the one that adopted this stub: forgets it without touching its
  // VMM-alive word (that word is the other process's).
  void ForgetInherited() {
    adopted_ = false;
    Release();
  }

 private:
  void Reset();
  Result<void> WaitForAnnouncement(uint32_t event);
  std::string DescribeDeath() const;

  pid_t pid_ = -1;
  UniqueFd pidfd_;
  UniqueFd page_fd_;  // the shared page's memfd
  Mapping page_;
  uint64_t fork_token_ = 0;
  bool adopted_ = false;
  // CLOCK_MONOTONIC ns of the oldest Kick() not yet answered by a stop (0: none).
  std::atomic<int64_t> kicked_at_ns_{0};
  const char* namespaces_ = "none";
};

}  // namespace flurry
