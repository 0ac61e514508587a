// Internal to the descriptor codec: reading format version 1 descriptors (flurry before the
// backend-neutral format version 2). Version 1 carried KVM's vCPU state; it is converted to an
// x86::UserCpuState. docs/formats/descriptor.md, "Format version 1".
#pragma once

#include <cstddef>
#include <cstdint>

#include "base/error.h"
#include "descriptor.pb.h"
#include "descriptor_v1.pb.h"
#include "snapshot/vm_descriptor.h"

namespace flurry::descriptor_internal {

inline constexpr uint32_t kFormatVersion1 = 1;
inline constexpr size_t kV1XsaveBytes = 4096;  // the legacy KVM_GET_XSAVE area
inline constexpr int kV1MaxMsrs = 64;

// The version 1 syscall gate at x86::kSyscallGateAddr: `mov [kDoorbellAddr], eax` (7 bytes),
// then `sysretq`. A version 1 vCPU captured inside it is moved to where the guest stands in user
// mode: before the `syscall` (2 bytes) if the doorbell write has not happened, after the
// `sysretq` if it has.
inline constexpr uint64_t kV1GateDoorbellInsnLength = 7;
inline constexpr uint64_t kSyscallInsnLength = 2;
inline constexpr uint64_t kSysretFlagsMask = 0x3c7fd7;  // the RFLAGS bits sysretq loads from R11

// Converts a version 1 payload. `shared` is the payload parsed as the version 2 message (fields
// 1 and 3..10 are unchanged), `v1` the same bytes parsed as flurry.descriptor.v1.VmDescriptor.
// Representation checks only, as FromProto; the result's backend is "kvm" (the only backend
// that wrote version 1).
Result<VmDescriptor> FromProtoV1(const ::flurry::descriptor::v2::VmDescriptor& shared,
                                 const ::flurry::descriptor::v1::VmDescriptor& v1);

// The vCPU part of FromProtoV1.
Result<x86::UserCpuState> UserCpuFromV1(const ::flurry::descriptor::v1::Vcpu& vcpu,
                                        const ::flurry::descriptor::v1::SegmentBases& bases);

}  // namespace flurry::descriptor_internal
