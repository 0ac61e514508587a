#include "arch/x86_64/cpu_signature.h"

#include <cpuid.h>
#include <fmt/format.h>

#include <cstring>

#include "arch/x86_64/cpu_features.h"

namespace flurry::x86 {
namespace {

uint64_t Mix(uint64_t hash, uint32_t value) {
  hash ^= value;
  return hash * 0x100000001b3ULL;  // FNV-1a step
}

}  // namespace

CpuSignature CpuSignature::OfHost() {
  CpuSignature sig;
  uint32_t a, b, c, d;
  __cpuid(0, a, b, c, d);
  const uint32_t max_leaf = a;
  char vendor[13] = {};
  std::memcpy(vendor, &b, 4);
  std::memcpy(vendor + 4, &d, 4);
  std::memcpy(vendor + 8, &c, 4);
  sig.vendor = vendor;
  __cpuid(1, a, b, c, d);
  uint32_t base_family = (a >> 8) & 0xf;
  uint32_t base_model = (a >> 4) & 0xf;
  sig.family = base_family == 0xf ? base_family + ((a >> 20) & 0xff) : base_family;
  sig.model = (base_family == 0x6 || base_family == 0xf) ? base_model | (((a >> 16) & 0xf) << 4)
                                                         : base_model;
  sig.stepping = a & 0xf;
  uint64_t hash = 0xcbf29ce484222325ULL;
  hash = Mix(Mix(hash, c & ~(1u << 27)), d);  // leaf 1 ecx (minus OSXSAVE, OS-controlled), edx
  if (max_leaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    hash = Mix(Mix(Mix(hash, b), c), d);
  }
  if (max_leaf >= 0xd) {
    __cpuid_count(0xd, 0, a, b, c, d);
    hash = Mix(Mix(hash, a), d);
  }
  sig.features_hash = hash;
  sig.xcr0 = HostXcr0();
  return sig;
}

std::string CpuSignature::ToString() const {
  return fmt::format("{} family {:#x} model {:#x} stepping {} features {:016x} xcr0 {:#x}", vendor,
                     family, model, stepping, features_hash, xcr0);
}

}  // namespace flurry::x86
