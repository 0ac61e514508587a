#include "snapshot/descriptor_v1.h"

#include <algorithm>

#include "arch/x86_64/layout.h"
#include "snapshot/descriptor_checks.h"
#include "snapshot/descriptor_proto.h"

namespace flurry::descriptor_internal {

namespace pb1 = ::flurry::descriptor::v1;
namespace pb2 = ::flurry::descriptor::v2;

namespace {

constexpr uint32_t kMsrFsBase = 0xc0000100;
constexpr uint32_t kMsrGsBase = 0xc0000101;
// The software-reserved bytes of the XSAVE legacy region: the kernel's KVM_GET_XSAVE fills them
// with its signal-frame bytes (FP_XSTATE_MAGIC1, ...); x86::UserCpuState has them zero.
constexpr size_t kXsaveSwReservedStart = 464;
constexpr size_t kXsaveSwReservedEnd = 512;

}  // namespace

Result<x86::UserCpuState> UserCpuFromV1(const pb1::Vcpu& v, const pb1::SegmentBases& bases) {
  if (!v.has_regs()) return Missing("vcpu.regs");
  if (!v.has_sregs()) return Missing("vcpu.sregs");
  if (!v.sregs().has_fs()) return Missing("sregs.fs");
  if (!v.sregs().has_gs()) return Missing("sregs.gs");
  if (v.xsave().size() != kV1XsaveBytes) {
    return Invalid("xsave area is {} bytes, expected {}", v.xsave().size(), kV1XsaveBytes);
  }
  if (v.msrs_size() > kV1MaxMsrs) {
    return Invalid("{} MSRs, at most {} allowed", v.msrs_size(), kV1MaxMsrs);
  }

  x86::UserCpuState out;
  const pb1::Regs& r = v.regs();
  out.regs.rax = r.rax();
  out.regs.rbx = r.rbx();
  out.regs.rcx = r.rcx();
  out.regs.rdx = r.rdx();
  out.regs.rsi = r.rsi();
  out.regs.rdi = r.rdi();
  out.regs.rsp = r.rsp();
  out.regs.rbp = r.rbp();
  out.regs.r8 = r.r8();
  out.regs.r9 = r.r9();
  out.regs.r10 = r.r10();
  out.regs.r11 = r.r11();
  out.regs.r12 = r.r12();
  out.regs.r13 = r.r13();
  out.regs.r14 = r.r14();
  out.regs.r15 = r.r15();
  out.regs.rip = r.rip();
  out.regs.rflags = r.rflags();

  // FS/GS base: bases an arch_prctl set but the VMM had not applied yet win; otherwise the
  // MSRs, and the segment registers if the MSR list lacks them (all three agree when applied).
  if (bases.dirty()) {
    out.regs.fs_base = bases.fs_base();
    out.regs.gs_base = bases.gs_base();
  } else {
    out.regs.fs_base = v.sregs().fs().base();
    out.regs.gs_base = v.sregs().gs().base();
    for (const pb1::Msr& msr : v.msrs()) {
      if (msr.index() == kMsrFsBase) out.regs.fs_base = msr.data();
      if (msr.index() == kMsrGsBase) out.regs.gs_base = msr.data();
    }
  }

  // Captured inside the syscall gate (on hardware KVM the gate runs at CPL0, a state version 2
  // cannot express): complete or undo the syscall as the guest would see it.
  if (out.regs.rip == x86::kSyscallGateAddr) {
    // The doorbell write has not happened: the syscall was not served. Re-run it.
    out.regs.rip = out.regs.rcx - kSyscallInsnLength;
    out.regs.rflags = out.regs.r11;
  } else if (out.regs.rip == x86::kSyscallGateAddr + kV1GateDoorbellInsnLength) {
    // Served (rax holds the result); do what sysretq does.
    out.regs.rip = out.regs.rcx;
    out.regs.rflags = (out.regs.r11 & kSysretFlagsMask) | 0x2;
  }

  out.xcr0 = v.xcr0();
  out.xsave.assign(v.xsave().begin(), v.xsave().end());
  std::fill(out.xsave.begin() + kXsaveSwReservedStart, out.xsave.begin() + kXsaveSwReservedEnd,
            uint8_t{0});
  return out;
}

Result<VmDescriptor> FromProtoV1(const pb2::VmDescriptor& shared, const pb1::VmDescriptor& v1) {
  if (!v1.has_vcpu()) return Missing("vcpu");
  if (!v1.has_segment_bases()) return Missing("segment_bases");
  VmDescriptor d = FLURRY_TRY(SharedFieldsFromProto(shared));
  d.vcpu = FLURRY_TRY(UserCpuFromV1(v1.vcpu(), v1.segment_bases()));
  d.backend = "kvm";
  return d;
}

}  // namespace flurry::descriptor_internal
