// The guest's vDSO: a small shared object mapped into every guest that answers clock_gettime,
// gettimeofday and time from the TSC in user mode, without a VM exit (src/vmm/vdso/vdso.c),
// and the clock data page it reads (src/vmm/vdso/vvar.h).
#pragma once

#include <cstdint>

#include "base/error.h"
#include "kvm/kvm_vcpu.h"
#include "memory/guest_memory.h"

namespace flurry {

// Copies the vDSO image's segments to kVdsoAddr; returns that address (AT_SYSINFO_EHDR).
Result<uint64_t> InstallVdso(GuestMemory& memory);

// Keeps the vvar page's clock parameters in step with the host's clocks.
// Owner: the Vm; used on the vCPU thread while the vCPU is stopped.
class GuestClock {
 public:
  // Learns the guest TSC's offset from the host TSC and its frequency, then publishes the
  // first clock base. Without a usable TSC the vvar page stays invalid and the vDSO falls
  // back to syscalls.
  Result<void> Start(const KvmVcpu& vcpu, GuestMemory& memory);
  // Re-bases the clock on the host's clocks when the last base is older than a second, never
  // letting guest CLOCK_MONOTONIC go backwards. Cheap when nothing is due.
  void Refresh(GuestMemory& memory);

 private:
  void Publish(GuestMemory& memory, uint64_t host_tsc, uint64_t monotonic_ns);
  bool valid_ = false;
  int64_t guest_tsc_minus_host_ = 0;
  uint64_t ns_per_tsc_q32_ = 0;
  uint64_t next_refresh_tsc_ = 0;
  uint64_t tsc_per_second_ = 0;
};

}  // namespace flurry
