#include "arch/x86_64/cpu_features.h"

#include <cpuid.h>

namespace flurry::x86 {

uint64_t HostXcr0() {
  // Read once: the kernel fixes XCR0 at boot, and CPUID is a VM exit when this host is itself a
  // guest (tens of microseconds on PVM) — too slow for every signal delivery.
  static const uint64_t xcr0 = [] {
    uint32_t a, b, c, d;
    if (__get_cpuid(1, &a, &b, &c, &d) == 0 || (c & bit_OSXSAVE) == 0) return uint64_t{0};
    uint32_t eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return (uint64_t{edx} << 32) | eax;
  }();
  return xcr0;
}

uint64_t HostXsaveSize() {
  static const uint64_t size = [] {
    if (HostXcr0() == 0) return uint64_t{512};
    uint32_t a, b, c, d;
    __cpuid_count(0xd, 0, a, b, c, d);
    return uint64_t{b};
  }();
  return size;
}

uint64_t MinSigStackSize() { return HostXsaveSize() + 1024; }

uint32_t HostHwcap() {
  uint32_t a, b, c, d;
  __cpuid(1, a, b, c, d);
  return d;
}

}  // namespace flurry::x86
