// KvmLane: one vCPU of the KVM backend and, while the VM runs several lanes, the host thread
// that runs it (KVM_RUN blocks its caller, so each vCPU running at once needs a thread).
//
// Owner: KvmBackend (an array of them, never moved). Thread: the backend's run thread owns
// every field while `phase` is kParked or kDone; the lane thread owns the vCPU from kGo until
// it stores kDone. `phase`, `tid` and `run_area` are read by any thread (kicks).
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <optional>
#include <thread>

#include "arch/x86_64/user_cpu_state.h"
#include "base/error.h"
#include "kvm/kvm_vcpu.h"

namespace flurry {

struct KvmLane {
  enum Phase : uint32_t {
    kParked,  // stopped; the run thread has it (its stop returned, or never run)
    kGo,      // the lane thread runs the vCPU (in or about to enter KVM_RUN)
    kDone,    // stopped; `exit` holds why; the stop is not returned yet
    kQuit,    // the lane thread ends
  };

  // Made at the lane's first use and kept until the VM goes: KVM cannot remove a vCPU, so a
  // lane ended and added again reuses it.
  std::optional<KvmVcpu> vcpu;
  bool vcpu_ready = false;  // set up for user mode (MakeVcpu finished)
  bool exists = false;      // AddLane .. EndOtherLanes
  bool active = false;      // LoadCpu .. SetIdle
  x86::UserRegs regs;       // the user view as of its last stop (or as LoadCpu gave)
  bool segment_bases_dirty = false;

  // How long the lane stood stopped before its last KVM_RUN: from the end of the run before
  // (ns; -1: it ran once or never). Written by whoever runs the vCPU, in RunVcpu.
  int64_t stopped_ns = -1;
  int64_t run_ended_at_ns = 0;  // CLOCK_MONOTONIC ns (0: never ran)

  std::atomic<uint32_t> phase{kParked};
  Result<uint32_t> exit{0};   // the lane thread's last KVM_RUN (read at kDone)
  std::thread thread;         // while the backend runs several lanes
  std::atomic<pid_t> tid{0};  // the lane thread's, for kicks (0: none)
  std::atomic<kvm_run*> run_area{nullptr};
};

}  // namespace flurry
