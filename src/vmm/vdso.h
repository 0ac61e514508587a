// The guest's vDSO: a small shared object mapped into every guest that answers clock_gettime,
// gettimeofday and time from the TSC in user mode, without a VM exit (src/vmm/vdso/vdso.c),
// and the clock data page it reads (src/vmm/vdso/vvar.h).
#pragma once

#include <cstdint>
#include <optional>

#include "base/error.h"
#include "memory/guest_memory.h"

namespace flurry {

// Copies the vDSO image's segments to kVdsoAddr; returns that address (AT_SYSINFO_EHDR).
Result<uint64_t> InstallVdso(GuestMemory& memory);

// Keeps the vvar page's clock parameters in step with the host's clocks.
// Owner: the Vm; used on the vCPU thread while the guest is stopped.
class GuestClock {
 public:
  // The guest's TSC reads `guest_tsc_minus_host` ahead of the host's and ticks at `tsc_khz`
  // (0: unknown — then it is measured against the host's clocks during the guest's first
  // ~20 ms, during which the vDSO falls back to syscalls). The guest's monotonic-domain clocks
  // read `monotonic_offset_ns` ahead of the host's (GuestState::monotonic_offset_ns); its wall
  // clocks are the host's. Publishes the first clock base.
  // `not_before_ns`: a guest CLOCK_MONOTONIC the new clock must not start below (the clock a
  // forked process or clone had: its vDSO may have been a little ahead of the host's).
  Result<void> Start(GuestMemory& memory, int64_t guest_tsc_minus_host, uint64_t tsc_khz,
                     int64_t monotonic_offset_ns, uint64_t not_before_ns = 0);
  // The guest's CLOCK_MONOTONIC as the vDSO reads it now (0: nothing published yet).
  uint64_t GuestNowNs() const;
  // Re-bases the clock on the host's clocks when the last base is older than a second, at the
  // TSC frequency measured over everything since Start. The guest's CLOCK_MONOTONIC never goes
  // backwards: found behind the host's, it steps forward to it; found ahead (a frequency that
  // was a little off), it runs slower until the next re-base brings it back in step. Cheap
  // when nothing is due.
  void Refresh();

 private:
  void SetRate(uint64_t ns_per_tsc_q32);
  // The host's nanoseconds per TSC tick (32.32 fixed point) from Start to (host_tsc,
  // host_monotonic_ns), when that is long enough to tell (20 ms) and plausible.
  std::optional<uint64_t> MeasuredRate(uint64_t host_tsc, uint64_t host_monotonic_ns) const;
  uint64_t TscTicks(uint64_t ns) const;
  // Publishes a base: the host TSC and the host's CLOCK_MONOTONIC at one instant.
  Result<void> Publish(uint64_t host_tsc, uint64_t host_monotonic_ns);
  GuestMemory* memory_ = nullptr;
  int64_t monotonic_offset_ns_ = 0;
  bool valid_ = false;
  uint64_t baseline_tsc_ = 0;  // the host TSC and CLOCK_MONOTONIC at Start
  uint64_t baseline_ns_ = 0;
  int64_t guest_tsc_minus_host_ = 0;
  uint64_t ns_per_tsc_q32_ = 0;  // the published rate
  uint64_t tsc_base_ = 0;        // the published base (guest TSC, guest monotonic ns)
  uint64_t monotonic_base_ns_ = 0;
  uint64_t next_refresh_tsc_ = 0;
};

}  // namespace flurry
