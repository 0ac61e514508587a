// Requests that drive a running Vm from outside the guest (the --api socket, `flurry ctl`):
// status, pause, resume, snapshot to a directory, and host-initiated clone. Plain data.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "memory/lazy_pages.h"

namespace flurry {

struct ControlRequest {
  enum class Kind { kStatus, kPause, kResume, kSnapshot, kClone, kServe };
  Kind kind = Kind::kStatus;
  std::string directory;   // kSnapshot: where to write descriptor + memory image
  int32_t count = 0;       // kClone: how many clones
  std::string address;     // kServe: HOST:PORT the page server listens on (port 0: any)
  bool multicast = false;  // kServe: push each page reply to every restoring VM too
};

struct ControlReply {
  bool ok = true;
  std::string error;     // when !ok
  std::string state;     // "running", "paused" or "exited"
  int32_t clone_id = 0;  // this VM's clone ID
  uint64_t family_id = 0;
  uint64_t ram_size = 0;
  uint64_t syscalls = 0;           // syscalls served so far
  std::string backend;             // "kvm" or "seccomp"
  std::vector<int32_t> clone_ids;  // kClone: the new clones' IDs
  std::vector<int32_t> clone_pids;
  uint64_t descriptor_bytes = 0;  // kSnapshot
  uint64_t memory_bytes = 0;      // kSnapshot: bytes of guest memory written
  std::string address;            // kServe: where the page server listens (HOST:PORT)
  std::string key;                // kServe: the page server's key (32 hex digits)
  int32_t server_pid = 0;         // kServe: the page server's process
  // Memory on demand (a VM restored with it): its counters.
  std::optional<LazyStats> on_demand;

  static ControlReply Failure(std::string message, std::string state = "") {
    ControlReply reply;
    reply.ok = false;
    reply.error = std::move(message);
    reply.state = std::move(state);
    return reply;
  }
};

}  // namespace flurry
