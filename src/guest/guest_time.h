// Guest time: the guest's monotonic-domain clocks are the host's plus an offset
// (GuestState::monotonic_offset_ns), so a VM restored or cloned on another host keeps a
// coherent CLOCK_MONOTONIC (docs/design.md, "The guest clock"). The wall clocks stay the host's.
//
// Plain functions; the Host* readers read the host's clocks, the rest is arithmetic. Used on the
// run thread by the syscall layer, the vDSO clock and descriptor capture/restore.
#pragma once

#include <time.h>

#include <cstdint>

namespace flurry {

// CLOCK_MONOTONIC, _COARSE, _RAW and CLOCK_BOOTTIME: the clocks the guest sees as the host's
// plus the offset. CLOCK_REALTIME(_COARSE), CLOCK_TAI and the CPU-time clocks are the host's.
bool IsOffsetClock(clockid_t clock);

// The host's `clock` in nanoseconds.
int64_t HostClockNs(clockid_t clock);

// Guest time (ns) for a host reading of an offset clock, and back.
inline int64_t GuestFromHostNs(int64_t host_ns, int64_t offset_ns) { return host_ns + offset_ns; }
inline int64_t HostFromGuestNs(int64_t guest_ns, int64_t offset_ns) { return guest_ns - offset_ns; }
// `clock` (one IsOffsetClock covers, or a wall clock) as the guest reads it now.
int64_t GuestClockNs(clockid_t clock, int64_t offset_ns);

// A timespec a syscall takes as a time: seconds >= 0, nanoseconds in [0, 1 s).
inline bool ValidTimespec(const timespec& ts) {
  return ts.tv_sec >= 0 && ts.tv_nsec >= 0 && ts.tv_nsec < 1'000'000'000;
}

// The guest's CLOCK_MONOTONIC now.
inline int64_t GuestMonotonicNs(int64_t offset_ns) {
  return GuestFromHostNs(HostClockNs(CLOCK_MONOTONIC), offset_ns);
}

int64_t TimespecNs(const timespec& ts);
// Negative times become 0 (a deadline already passed).
timespec NsTimespec(int64_t ns);

// A guest absolute deadline on `clock` as the host's clock_nanosleep needs it: offset clocks are
// converted, others are returned unchanged.
timespec HostDeadline(clockid_t clock, const timespec& guest_deadline, int64_t offset_ns);

// The guest's clock at a capture instant (what a VM descriptor records).
struct ClockCapture {
  int64_t guest_monotonic_ns = 0;  // guest CLOCK_MONOTONIC
  int64_t host_realtime_ns = 0;    // the capturing host's CLOCK_REALTIME
};

// Reads the host's clocks now for a guest whose offset is `offset_ns`.
ClockCapture CaptureClockNow(int64_t offset_ns);

// How a VM made from a descriptor continues the guest's monotonic clock.
enum class ClockResume {
  // From the captured value: time spent stored is not counted (a snapshot restore, as KVM and
  // Firecracker snapshots do).
  kFromCapture,
  // From the captured value plus the wall-clock time since the capture, per the hosts'
  // CLOCK_REALTIME (a clone on another host: its clock agrees with its parent's up to the
  // hosts' wall-clock skew). An elapsed time below 0 or above kMaxWallClockGapNs counts as 0.
  kPlusWallClock,
};

// Beyond this, a wall-clock gap is taken for a wrong clock, not for time spent (1 hour).
inline constexpr int64_t kMaxWallClockGapNs = int64_t{3600} * 1'000'000'000;

// The wall-clock time to add under kPlusWallClock: now - captured, or 0 when that is negative
// or larger than kMaxWallClockGapNs.
int64_t WallClockGapNs(int64_t captured_realtime_ns, int64_t now_realtime_ns);

// The offset that makes the guest's monotonic clock continue from `captured` as `how` says,
// given the host's clocks `now` (monotonic_ns: host CLOCK_MONOTONIC; realtime_ns: host
// CLOCK_REALTIME). The guest's clock is never behind the captured value.
int64_t RestoredOffsetNs(const ClockCapture& captured, ClockResume how, int64_t now_monotonic_ns,
                         int64_t now_realtime_ns);

}  // namespace flurry
