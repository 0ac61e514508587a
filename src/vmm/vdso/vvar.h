/* The vDSO's clock data page (guest address kVvarAddr), shared by the VMM (writer) and the vDSO
 * (reader). The VMM writes it only while the vCPU is stopped, so no sequence counter is needed
 * with one vCPU. C and C++. Layout is ABI between flurry and its vDSO build (same source tree). */
#ifndef FLURRY_VDSO_VVAR_H_
#define FLURRY_VDSO_VVAR_H_

#include <stdint.h>

#define FLURRY_VVAR_ADDRESS 0xA000ULL
#define FLURRY_VVAR_MAGIC 0x52415656594c4646ULL /* "FFLYVVAR" */

struct flurry_vvar {
  uint64_t magic;
  uint64_t tsc_base;          /* guest TSC at the base instant */
  uint64_t monotonic_base_ns; /* guest CLOCK_MONOTONIC at the base instant (host's + offset) */
  uint64_t ns_per_tsc_q32;    /* nanoseconds per TSC tick, 32.32 fixed point */
  /* The other clocks relative to the guest's CLOCK_MONOTONIC. */
  int64_t realtime_offset_ns; /* CLOCK_REALTIME - CLOCK_MONOTONIC */
  int64_t boottime_offset_ns; /* CLOCK_BOOTTIME - CLOCK_MONOTONIC */
  int64_t tai_offset_ns;      /* CLOCK_TAI - CLOCK_MONOTONIC */
  int64_t raw_offset_ns;      /* CLOCK_MONOTONIC_RAW - CLOCK_MONOTONIC */
};

#ifdef __cplusplus
static_assert(sizeof(flurry_vvar) == 64, "vvar layout");
#endif

#endif /* FLURRY_VDSO_VVAR_H_ */
