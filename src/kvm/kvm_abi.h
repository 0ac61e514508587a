// ABI helpers for KVM ioctls whose structs end in a flexible array.
//
// The kernel headers declare those arrays with __DECLARE_FLEX_ARRAY, which in C++ (g++) adds a
// one-byte empty struct in front of the array: sizeof(kvm_msrs) becomes 16 instead of 8 and the
// ioctl numbers derived from it (KVM_SET_MSRS, KVM_SET_CPUID2, ...) no longer match the kernel's.
// So flurry declares the headers itself, computes the ioctl numbers from them, and checks the
// sizes the kernel expects.
#pragma once

#include <linux/kvm.h>

#include <cstdint>

namespace flurry::kvm_abi {

struct ArrayHeader {  // {__u32 count; __u32 pad;} in front of kvm_msr_entry/kvm_cpuid_entry2
  uint32_t count;
  uint32_t pad;
};
static_assert(sizeof(ArrayHeader) == 8);
static_assert(sizeof(kvm_msr_entry) == 16);
static_assert(sizeof(kvm_cpuid_entry2) == 40);
static_assert(sizeof(kvm_regs) == 144);
static_assert(sizeof(kvm_sregs) == 312);

// kvm_xsave without its trailing flexible array (legacy 4 KiB area of KVM_GET/SET_XSAVE).
struct Xsave {
  uint32_t region[1024];
};
static_assert(sizeof(Xsave) == 4096);

inline constexpr unsigned long kGetXsave = _IOR(KVMIO, 0xa4, Xsave);
inline constexpr unsigned long kSetXsave = _IOW(KVMIO, 0xa5, Xsave);
inline constexpr unsigned long kGetMsrIndexList = _IOWR(KVMIO, 0x02, ArrayHeader);
inline constexpr unsigned long kGetSupportedCpuid = _IOWR(KVMIO, 0x05, ArrayHeader);
inline constexpr unsigned long kGetMsrs = _IOWR(KVMIO, 0x88, ArrayHeader);
inline constexpr unsigned long kSetMsrs = _IOW(KVMIO, 0x89, ArrayHeader);
inline constexpr unsigned long kSetCpuid2 = _IOW(KVMIO, 0x90, ArrayHeader);

// A header followed by N entries, laid out as the kernel expects.
template <typename Entry, int N>
struct Array {
  ArrayHeader header{};
  Entry entries[N];
};
static_assert(sizeof(Array<kvm_msr_entry, 4>) == 8 + 4 * 16);
static_assert(sizeof(Array<kvm_cpuid_entry2, 2>) == 8 + 2 * 40);

}  // namespace flurry::kvm_abi
