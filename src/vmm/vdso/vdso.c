/* flurry's guest vDSO: clock_gettime, gettimeofday and time from the TSC, in user mode.
 * Built freestanding into a tiny shared object (see CMakeLists.txt) and embedded in the VMM.
 * Clocks it cannot compute (CPU-time clocks) fall back to the real syscall. */
#include <stdint.h>

#include "vvar.h"

struct vdso_timespec {
  int64_t tv_sec;
  int64_t tv_nsec;
};
struct vdso_timeval {
  int64_t tv_sec;
  int64_t tv_usec;
};

#define CLOCK_REALTIME 0
#define CLOCK_MONOTONIC 1
#define CLOCK_MONOTONIC_RAW 4
#define CLOCK_REALTIME_COARSE 5
#define CLOCK_MONOTONIC_COARSE 6
#define CLOCK_BOOTTIME 7
#define CLOCK_TAI 11

static inline long raw_syscall2(long nr, long a, long b) {
  long ret;
  __asm__ volatile("syscall" : "=a"(ret) : "a"(nr), "D"(a), "S"(b) : "rcx", "r11", "memory");
  return ret;
}

static inline uint64_t monotonic_ns(const volatile struct flurry_vvar* v) {
  uint32_t lo, hi;
  __asm__ volatile("rdtsc" : "=a"(lo), "=d"(hi));
  uint64_t tsc = ((uint64_t)hi << 32) | lo;
  uint64_t delta = tsc > v->tsc_base ? tsc - v->tsc_base : 0;
  return v->monotonic_base_ns + (uint64_t)(((unsigned __int128)delta * v->ns_per_tsc_q32) >> 32);
}

static inline int clock_ns(long clock, uint64_t* ns) {
  const volatile struct flurry_vvar* v = (const volatile struct flurry_vvar*)FLURRY_VVAR_ADDRESS;
  if (v->magic != FLURRY_VVAR_MAGIC) return 0;
  uint64_t mono = monotonic_ns(v);
  switch (clock) {
    case CLOCK_MONOTONIC:
    case CLOCK_MONOTONIC_COARSE:
      *ns = mono;
      return 1;
    case CLOCK_REALTIME:
    case CLOCK_REALTIME_COARSE:
      *ns = mono + v->realtime_offset_ns;
      return 1;
    case CLOCK_BOOTTIME:
      *ns = mono + v->boottime_offset_ns;
      return 1;
    case CLOCK_TAI:
      *ns = mono + v->tai_offset_ns;
      return 1;
    case CLOCK_MONOTONIC_RAW:
      *ns = mono + v->raw_offset_ns;
      return 1;
    default:
      return 0;
  }
}

int __vdso_clock_gettime(long clock, struct vdso_timespec* ts) {
  uint64_t ns;
  if (!clock_ns(clock, &ns)) return (int)raw_syscall2(228 /* clock_gettime */, clock, (long)ts);
  ts->tv_sec = (int64_t)(ns / 1000000000ULL);
  ts->tv_nsec = (int64_t)(ns % 1000000000ULL);
  return 0;
}

int __vdso_gettimeofday(struct vdso_timeval* tv, void* tz) {
  uint64_t ns;
  if (!clock_ns(CLOCK_REALTIME, &ns))
    return (int)raw_syscall2(96 /* gettimeofday */, (long)tv, (long)tz);
  if (tv) {
    tv->tv_sec = (int64_t)(ns / 1000000000ULL);
    tv->tv_usec = (int64_t)(ns % 1000000000ULL / 1000);
  }
  if (tz) {
    ((int32_t*)tz)[0] = 0;
    ((int32_t*)tz)[1] = 0;
  }
  return 0;
}

int64_t __vdso_time(int64_t* t) {
  uint64_t ns;
  if (!clock_ns(CLOCK_REALTIME, &ns)) return raw_syscall2(201 /* time */, (long)t, 0);
  int64_t seconds = (int64_t)(ns / 1000000000ULL);
  if (t) *t = seconds;
  return seconds;
}

int __vdso_clock_getres(long clock, struct vdso_timespec* ts) {
  return (int)raw_syscall2(229 /* clock_getres */, clock, (long)ts);
}

long __vdso_getcpu(unsigned* cpu, unsigned* node, void* unused) {
  (void)unused;
  if (cpu) *cpu = 0;
  if (node) *node = 0;
  return 0;
}
