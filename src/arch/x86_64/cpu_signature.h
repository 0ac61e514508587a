// CpuSignature: which host CPU model a VM's state was captured on. CPUID is not intercepted on
// every backend (the guest sees the host's CPUID and may have selected AVX-512 code paths), so a
// VM must never move to a CPU whose signature differs.
#pragma once

#include <cstdint>
#include <string>

namespace flurry::x86 {

struct CpuSignature {
  std::string vendor;       // "GenuineIntel"
  uint32_t family = 0;      // display family
  uint32_t model = 0;       // display model
  uint32_t stepping = 0;
  uint64_t features_hash = 0;  // hash of CPUID leaves 1, 7 and 0xD that code may dispatch on
  uint64_t xcr0 = 0;           // extended state the guest may use

  bool operator==(const CpuSignature&) const = default;
  std::string ToString() const;

  // The signature of the CPU this process runs on.
  static CpuSignature OfHost();
};

}  // namespace flurry::x86
