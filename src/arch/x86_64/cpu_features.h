// Facts about the host CPU that a user program can see (CPUID, XGETBV): what the guest runs on
// under every backend. Nothing here needs KVM.
#pragma once

#include <cstdint>

namespace flurry::x86 {

// XCR0 as the host OS set it (xgetbv 0); 0 when the CPU or OS has no XSAVE (CPUID.1:ECX.OSXSAVE
// clear: then xgetbv itself would raise #UD).
uint64_t HostXcr0();

// Size of the standard-format XSAVE area for the state components enabled in XCR0
// (CPUID.(EAX=0xD,ECX=0).EBX); 512 (FXSAVE) without XSAVE.
uint64_t HostXsaveSize();

// Signal frame space glibc should reserve (AT_MINSIGSTKSZ): the XSAVE area plus the rest of a
// Linux signal frame.
uint64_t MinSigStackSize();

// CPUID.1:EDX, which Linux reports as AT_HWCAP.
uint32_t HostHwcap();

}  // namespace flurry::x86
