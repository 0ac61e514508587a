#include "vmm/vdso.h"

#include <elf.h>
#include <x86intrin.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <ctime>
#include <vector>

#include "arch/x86_64/layout.h"
#include "vmm/vdso/vvar.h"

namespace flurry {

extern const uint8_t kVdsoImage[];
extern const size_t kVdsoImage_size;

static_assert(FLURRY_VVAR_ADDRESS == x86::kVvarAddr);

Result<uint64_t> InstallVdso(GuestMemory& memory) {
  const uint8_t* image = kVdsoImage;
  const size_t size = kVdsoImage_size;
  Elf64_Ehdr ehdr;
  if (size < sizeof ehdr) return Fail("vDSO image truncated");
  std::memcpy(&ehdr, image, sizeof ehdr);
  if (std::memcmp(ehdr.e_ident, ELFMAG, SELFMAG) != 0 || ehdr.e_phentsize != sizeof(Elf64_Phdr) ||
      ehdr.e_phoff > size || ehdr.e_phnum > (size - ehdr.e_phoff) / sizeof(Elf64_Phdr)) {
    return Fail("vDSO image is not a valid ELF");
  }
  std::vector<uint8_t> base(x86::kVdsoMaxSize, 0);
  for (int i = 0; i < ehdr.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, image + ehdr.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_offset > size || ph.p_filesz > size - ph.p_offset || ph.p_filesz > ph.p_memsz ||
        ph.p_vaddr > x86::kVdsoMaxSize || ph.p_memsz > x86::kVdsoMaxSize - ph.p_vaddr) {
      return Fail("vDSO segment {} does not fit in {} bytes", i, x86::kVdsoMaxSize);
    }
    std::memcpy(base.data() + ph.p_vaddr, image + ph.p_offset, ph.p_filesz);
  }
  FLURRY_TRY_CTX(memory.WritePhysical(x86::kVdsoAddr, base.data(), base.size()),
                 "installing the vDSO");
  const std::vector<uint8_t> zero_page(x86::kPageSize, 0);
  FLURRY_TRY_CTX(memory.WritePhysical(x86::kVvarAddr, zero_page.data(), zero_page.size()),
                 "clearing the vDSO's clock page");
  return x86::kVdsoAddr;
}

namespace {

uint64_t ClockNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// The host TSC's frequency as this process measured it (0: not yet). Clones inherit it.
std::atomic<uint64_t> g_calibrated_tsc_khz{0};
// How long the first calibration takes at least (the vDSO falls back to syscalls until then).
constexpr uint64_t kCalibrationNs = 20'000'000;
// How often the clock is re-based (at a syscall stop), and the time a guest clock found ahead
// of the host's is given to fall back in step.
constexpr uint64_t kRefreshNs = 1'000'000'000;

// A host TSC reading and the host's CLOCK_MONOTONIC at the same instant (the TSC read on both
// sides of the clock, the midpoint taken).
struct HostInstant {
  uint64_t tsc = 0;
  uint64_t monotonic_ns = 0;
};

HostInstant ReadHostInstant() {
  const uint64_t before = __rdtsc();
  const uint64_t ns = ClockNs(CLOCK_MONOTONIC);
  const uint64_t after = __rdtsc();
  return {before + (after - before) / 2, ns};
}

}  // namespace

uint64_t GuestClock::GuestNowNs() const {
  if (!valid_ || memory_ == nullptr) return 0;
  const uint64_t guest_tsc = __rdtsc() + guest_tsc_minus_host_;
  const uint64_t delta = guest_tsc > tsc_base_ ? guest_tsc - tsc_base_ : 0;
  return monotonic_base_ns_ +
         static_cast<uint64_t>((static_cast<unsigned __int128>(delta) * ns_per_tsc_q32_) >> 32);
}

Result<void> GuestClock::Start(GuestMemory& memory, int64_t guest_tsc_minus_host, uint64_t tsc_khz,
                               int64_t monotonic_offset_ns, uint64_t not_before_ns) {
  memory_ = &memory;
  monotonic_offset_ns_ = monotonic_offset_ns;
  guest_tsc_minus_host_ = guest_tsc_minus_host;
  // Every re-base measures the frequency again over everything since now: the longer the
  // guest runs, the more precise the clock.
  const HostInstant now = ReadHostInstant();
  baseline_tsc_ = now.tsc;
  baseline_ns_ = now.monotonic_ns;
  if (tsc_khz == 0) tsc_khz = g_calibrated_tsc_khz.load();
  // Unknown: learnt from the host's clocks over the guest's first milliseconds.
  if (tsc_khz == 0) return {};
  SetRate((1'000'000ULL << 32) / tsc_khz);
  // In host time (modulo 2^64, as Refresh): never below what the guest may have read.
  const uint64_t floor = not_before_ns - static_cast<uint64_t>(monotonic_offset_ns);
  const bool ahead = not_before_ns != 0 && static_cast<int64_t>(floor - now.monotonic_ns) > 0;
  return Publish(now.tsc, ahead ? floor : now.monotonic_ns);
}

void GuestClock::SetRate(uint64_t ns_per_tsc_q32) {
  ns_per_tsc_q32_ = ns_per_tsc_q32;
  valid_ = true;
}

std::optional<uint64_t> GuestClock::MeasuredRate(uint64_t host_tsc,
                                                 uint64_t host_monotonic_ns) const {
  if (host_tsc <= baseline_tsc_ || host_monotonic_ns < baseline_ns_ + kCalibrationNs) {
    return std::nullopt;
  }
  const uint64_t rate = static_cast<uint64_t>(
      (static_cast<unsigned __int128>(host_monotonic_ns - baseline_ns_) << 32) /
      (host_tsc - baseline_tsc_));
  // 100 MHz .. 20 GHz: otherwise not a constant TSC, never published.
  if (rate > (10ULL << 32) || rate < (1ULL << 32) / 20) return std::nullopt;
  return rate;
}

void GuestClock::Refresh() {
  if (memory_ == nullptr) return;
  if (valid_ && __rdtsc() < next_refresh_tsc_) return;
  const HostInstant now = ReadHostInstant();
  const std::optional<uint64_t> rate = MeasuredRate(now.tsc, now.monotonic_ns);
  if (!rate) {
    if (!valid_) return;  // still calibrating
    next_refresh_tsc_ = now.tsc + TscTicks(kRefreshNs);
    return;
  }
  g_calibrated_tsc_khz.store((1'000'000ULL << 32) / *rate);
  if (!valid_) {
    SetRate(*rate);
    (void)Publish(now.tsc, now.monotonic_ns);
    return;
  }
  // Where the published base puts the guest's clock now, in host time (modulo 2^64: the
  // offset may be negative).
  const uint64_t guest_tsc = now.tsc + guest_tsc_minus_host_;
  const uint64_t delta = guest_tsc > tsc_base_ ? guest_tsc - tsc_base_ : 0;
  const uint64_t extrapolated =
      monotonic_base_ns_ - static_cast<uint64_t>(monotonic_offset_ns_) +
      static_cast<uint64_t>((static_cast<unsigned __int128>(delta) * ns_per_tsc_q32_) >> 32);
  if (static_cast<int64_t>(extrapolated - now.monotonic_ns) <= 0) {
    // Behind (or on time): a step forward to the host's clock, at the measured rate.
    SetRate(*rate);
    (void)Publish(now.tsc, now.monotonic_ns);
    return;
  }
  // Ahead: the guest's clock never goes back, so it goes on from where it is, slower, to be
  // in step with the host's again by the next re-base.
  const uint64_t ahead = std::min(extrapolated - now.monotonic_ns, kRefreshNs / 2);
  SetRate(static_cast<uint64_t>(static_cast<unsigned __int128>(*rate) * (kRefreshNs - ahead) /
                                kRefreshNs));
  (void)Publish(now.tsc, extrapolated);
}

uint64_t GuestClock::TscTicks(uint64_t ns) const {
  if (ns_per_tsc_q32_ == 0) return 0;
  return static_cast<uint64_t>((static_cast<unsigned __int128>(ns) << 32) / ns_per_tsc_q32_);
}

Result<void> GuestClock::Publish(uint64_t host_tsc, uint64_t host_monotonic_ns) {
  flurry_vvar vvar{};
  // The vvar page holds guest time: monotonic = host + offset. The other clocks are given
  // relative to the guest's monotonic clock: the wall clocks (REALTIME, TAI) are the host's, so
  // their distance from it shrinks by the offset; RAW and BOOTTIME carry the offset too, so
  // theirs is the host's.
  const int64_t mono = static_cast<int64_t>(ClockNs(CLOCK_MONOTONIC));
  const int64_t guest_mono = mono + monotonic_offset_ns_;
  vvar.tsc_base = host_tsc + guest_tsc_minus_host_;
  vvar.monotonic_base_ns = host_monotonic_ns + static_cast<uint64_t>(monotonic_offset_ns_);
  vvar.ns_per_tsc_q32 = ns_per_tsc_q32_;
  tsc_base_ = vvar.tsc_base;
  monotonic_base_ns_ = vvar.monotonic_base_ns;
  vvar.realtime_offset_ns = static_cast<int64_t>(ClockNs(CLOCK_REALTIME)) - guest_mono;
  vvar.boottime_offset_ns = static_cast<int64_t>(ClockNs(CLOCK_BOOTTIME)) - mono;
  vvar.tai_offset_ns = static_cast<int64_t>(ClockNs(CLOCK_TAI)) - guest_mono;
  vvar.raw_offset_ns = static_cast<int64_t>(ClockNs(CLOCK_MONOTONIC_RAW)) - mono;
  vvar.magic = FLURRY_VVAR_MAGIC;
  next_refresh_tsc_ = host_tsc + TscTicks(kRefreshNs);
  return memory_->WritePhysical(x86::kVvarAddr, &vvar, sizeof vvar);
}

}  // namespace flurry
