#include "vmm/vdso.h"

#include <elf.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <x86intrin.h>

#include <cstring>
#include <ctime>

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
  uint8_t* base = memory.HostPointer(x86::kVdsoAddr, x86::kVdsoMaxSize);
  std::memset(base, 0, x86::kVdsoMaxSize);
  for (int i = 0; i < ehdr.e_phnum; ++i) {
    Elf64_Phdr ph;
    std::memcpy(&ph, image + ehdr.e_phoff + i * sizeof ph, sizeof ph);
    if (ph.p_type != PT_LOAD) continue;
    if (ph.p_offset > size || ph.p_filesz > size - ph.p_offset || ph.p_filesz > ph.p_memsz ||
        ph.p_vaddr > x86::kVdsoMaxSize || ph.p_memsz > x86::kVdsoMaxSize - ph.p_vaddr) {
      return Fail("vDSO segment {} does not fit in {} bytes", i, x86::kVdsoMaxSize);
    }
    std::memcpy(base + ph.p_vaddr, image + ph.p_offset, ph.p_filesz);
  }
  std::memset(memory.HostPointer(x86::kVvarAddr, x86::kPageSize), 0, x86::kPageSize);
  return x86::kVdsoAddr;
}

namespace {

uint64_t ClockNs(clockid_t clock) {
  timespec ts{};
  clock_gettime(clock, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

flurry_vvar* Vvar(GuestMemory& memory) {
  return reinterpret_cast<flurry_vvar*>(memory.HostPointer(x86::kVvarAddr, sizeof(flurry_vvar)));
}

}  // namespace

Result<void> GuestClock::Start(const KvmVcpu& vcpu, GuestMemory& memory) {
  int khz = ioctl(vcpu.fd(), KVM_GET_TSC_KHZ, 0);
  if (khz <= 0) return {};  // no usable TSC frequency: the vDSO falls back to syscalls
  kvm_msr_entry tsc{};
  tsc.index = 0x10;  // IA32_TIME_STAMP_COUNTER
  const uint64_t before = __rdtsc();
  FLURRY_TRY_CTX(vcpu.GetMsrs({&tsc, 1}), "reading the guest TSC");
  const uint64_t after = __rdtsc();
  guest_tsc_minus_host_ = static_cast<int64_t>(tsc.data - (before + (after - before) / 2));
  ns_per_tsc_q32_ = (1'000'000ULL << 32) / static_cast<uint64_t>(khz);
  tsc_per_second_ = static_cast<uint64_t>(khz) * 1000;
  valid_ = true;
  const uint64_t host_tsc = __rdtsc();
  Publish(memory, host_tsc, ClockNs(CLOCK_MONOTONIC));
  return {};
}

void GuestClock::Refresh(GuestMemory& memory) {
  if (!valid_) return;
  const uint64_t host_tsc = __rdtsc();
  if (host_tsc < next_refresh_tsc_) return;
  const flurry_vvar* vvar = Vvar(memory);
  const uint64_t guest_tsc = host_tsc + guest_tsc_minus_host_;
  const uint64_t delta = guest_tsc > vvar->tsc_base ? guest_tsc - vvar->tsc_base : 0;
  const uint64_t extrapolated =
      vvar->monotonic_base_ns +
      static_cast<uint64_t>((static_cast<unsigned __int128>(delta) * ns_per_tsc_q32_) >> 32);
  const uint64_t host_now = ClockNs(CLOCK_MONOTONIC);
  Publish(memory, host_tsc, host_now > extrapolated ? host_now : extrapolated);
}

void GuestClock::Publish(GuestMemory& memory, uint64_t host_tsc, uint64_t monotonic_ns) {
  flurry_vvar* vvar = Vvar(memory);
  const int64_t mono = static_cast<int64_t>(ClockNs(CLOCK_MONOTONIC));
  vvar->tsc_base = host_tsc + guest_tsc_minus_host_;
  vvar->monotonic_base_ns = monotonic_ns;
  vvar->ns_per_tsc_q32 = ns_per_tsc_q32_;
  vvar->realtime_offset_ns = static_cast<int64_t>(ClockNs(CLOCK_REALTIME)) - mono;
  vvar->boottime_offset_ns = static_cast<int64_t>(ClockNs(CLOCK_BOOTTIME)) - mono;
  vvar->tai_offset_ns = static_cast<int64_t>(ClockNs(CLOCK_TAI)) - mono;
  vvar->raw_offset_ns = static_cast<int64_t>(ClockNs(CLOCK_MONOTONIC_RAW)) - mono;
  vvar->magic = FLURRY_VVAR_MAGIC;
  next_refresh_tsc_ = host_tsc + tsc_per_second_;
}

}  // namespace flurry
