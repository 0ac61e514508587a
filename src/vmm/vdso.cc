#include "vmm/vdso.h"

#include <elf.h>
#include <x86intrin.h>

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

}  // namespace

Result<void> GuestClock::Start(GuestMemory& memory, int64_t guest_tsc_minus_host, uint64_t tsc_khz,
                               int64_t monotonic_offset_ns) {
  memory_ = &memory;
  monotonic_offset_ns_ = monotonic_offset_ns;
  guest_tsc_minus_host_ = guest_tsc_minus_host;
  if (tsc_khz == 0) tsc_khz = g_calibrated_tsc_khz.load();
  if (tsc_khz == 0) {
    // Learn the frequency from the host's clocks over the guest's first milliseconds.
    calibration_tsc_ = __rdtsc();
    calibration_ns_ = ClockNs(CLOCK_MONOTONIC_RAW);
    return {};
  }
  SetFrequency(tsc_khz);
  return Publish(__rdtsc(), ClockNs(CLOCK_MONOTONIC));
}

void GuestClock::SetFrequency(uint64_t tsc_khz) {
  ns_per_tsc_q32_ = (1'000'000ULL << 32) / tsc_khz;
  tsc_per_second_ = tsc_khz * 1000;
  valid_ = true;
}

void GuestClock::Refresh() {
  if (memory_ == nullptr) return;
  const uint64_t host_tsc = __rdtsc();
  if (!valid_) {
    if (calibration_tsc_ == 0) return;
    const uint64_t elapsed_ns = ClockNs(CLOCK_MONOTONIC_RAW) - calibration_ns_;
    if (elapsed_ns < kCalibrationNs || host_tsc <= calibration_tsc_) return;
    const uint64_t khz = static_cast<uint64_t>(
        (static_cast<unsigned __int128>(host_tsc - calibration_tsc_) * 1'000'000) / elapsed_ns);
    if (khz < 100'000 || khz > 20'000'000) {  // not a plausible constant TSC: never publish
      calibration_tsc_ = 0;
      return;
    }
    g_calibrated_tsc_khz.store(khz);
    SetFrequency(khz);
    (void)Publish(host_tsc, ClockNs(CLOCK_MONOTONIC));
    return;
  }
  if (host_tsc < next_refresh_tsc_) return;
  flurry_vvar vvar{};
  if (!memory_->ReadPhysical(x86::kVvarAddr, &vvar, sizeof vvar)) return;
  const uint64_t guest_tsc = host_tsc + guest_tsc_minus_host_;
  const uint64_t delta = guest_tsc > vvar.tsc_base ? guest_tsc - vvar.tsc_base : 0;
  const uint64_t extrapolated_guest =
      vvar.monotonic_base_ns +
      static_cast<uint64_t>((static_cast<unsigned __int128>(delta) * ns_per_tsc_q32_) >> 32);
  // In host time (modulo 2^64: the offset may be negative).
  const uint64_t extrapolated = extrapolated_guest - static_cast<uint64_t>(monotonic_offset_ns_);
  const uint64_t host_now = ClockNs(CLOCK_MONOTONIC);
  (void)Publish(host_tsc, host_now > extrapolated ? host_now : extrapolated);
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
  vvar.realtime_offset_ns = static_cast<int64_t>(ClockNs(CLOCK_REALTIME)) - guest_mono;
  vvar.boottime_offset_ns = static_cast<int64_t>(ClockNs(CLOCK_BOOTTIME)) - mono;
  vvar.tai_offset_ns = static_cast<int64_t>(ClockNs(CLOCK_TAI)) - guest_mono;
  vvar.raw_offset_ns = static_cast<int64_t>(ClockNs(CLOCK_MONOTONIC_RAW)) - mono;
  vvar.magic = FLURRY_VVAR_MAGIC;
  next_refresh_tsc_ = host_tsc + tsc_per_second_;
  return memory_->WritePhysical(x86::kVvarAddr, &vvar, sizeof vvar);
}

}  // namespace flurry
