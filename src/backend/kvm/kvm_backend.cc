#include "backend/kvm/kvm_backend.h"

#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <x86intrin.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "arch/x86_64/cpu_setup.h"
#include "arch/x86_64/exceptions.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/page_tables.h"
#include "arch/x86_64/system_tables.h"
#include "base/check.h"

namespace flurry {
namespace {

// RFLAGS as a program may run with them, whatever the guest put in R11 or a signal frame:
// sysretq's mask (0x3c7fd7) without IOPL, NT, VIF and VIP, with IF and the always-one bit.
constexpr uint64_t UserRflags(uint64_t rflags) { return (rflags & 0x240fd7) | 0x202; }
constexpr uint64_t kRflagsIf = 1 << 9;

// Bytes 464..511 of an FXSAVE/XSAVE image are software-reserved: not part of the state.
void ClearSoftwareBytes(std::vector<uint8_t>& xsave) {
  if (xsave.size() >= 512) std::memset(xsave.data() + 464, 0, 48);
}

kvm_regs FromUser(const x86::UserRegs& u) {
  kvm_regs k{};
  k.rax = u.rax;
  k.rbx = u.rbx;
  k.rcx = u.rcx;
  k.rdx = u.rdx;
  k.rsi = u.rsi;
  k.rdi = u.rdi;
  k.rsp = u.rsp;
  k.rbp = u.rbp;
  k.r8 = u.r8;
  k.r9 = u.r9;
  k.r10 = u.r10;
  k.r11 = u.r11;
  k.r12 = u.r12;
  k.r13 = u.r13;
  k.r14 = u.r14;
  k.r15 = u.r15;
  k.rip = u.rip;
  k.rflags = UserRflags(u.rflags);
  return k;
}

// Guest-physical address and slot of the scratch memory slot whose removal makes KVM drop every
// shadow page: above RAM (at most 64 GiB) and below the doorbell.
constexpr uint64_t kScratchSlotGpa = 1ULL << 37;
constexpr uint32_t kScratchSlot = 1;

// Whether this host's KVM builds shadow page tables from the guest's (instead of two-dimensional
// paging): the PVM flavour, or EPT/NPT switched off. FLURRY_KVM_SHADOW_PAGING=1 or 0 overrides
// what the module parameters say (tests run the shadow path on a host without it).
bool ShadowPaging() {
  if (const char* forced = std::getenv("FLURRY_KVM_SHADOW_PAGING")) {
    return std::string_view(forced) == "1";
  }
  auto reads = [](const char* path, std::initializer_list<const char*> values) {
    std::ifstream in(path);
    std::string word;
    if (!(in >> word)) return false;
    for (const char* v : values) {
      if (word == v) return true;
    }
    return false;
  };
  if (std::filesystem::exists("/sys/module/kvm_pvm")) return true;
  return reads("/sys/module/kvm_intel/parameters/ept", {"N", "0"}) ||
         reads("/sys/module/kvm_amd/parameters/npt", {"N", "0"});
}

}  // namespace

Result<std::unique_ptr<KvmPrepared>> KvmBackend::Prepare(uint64_t ram_bytes) {
  KvmSystem system = FLURRY_TRY(KvmSystem::Open());
  KvmVm vm = FLURRY_TRY(KvmVm::Create(system));
  KvmVcpu vcpu = FLURRY_TRY(KvmVcpu::Create(system, vm, 0));
  const uint64_t xcr0 =
      FLURRY_TRY_CTX(x86::SetupProcessModeVcpu(system, vcpu, 0, 0, 0), "setting up vCPU 0");
  auto prepared =
      std::make_unique<KvmPrepared>(std::move(system), std::move(vm), std::move(vcpu), xcr0);
  if (ram_bytes != 0) {
    GuestMemory memory = FLURRY_TRY(GuestMemory::Create(ram_bytes));
    FLURRY_TRY(prepared->vm.SetMemoryRegion(0, 0, memory.size(), memory.host_base()));
    prepared->memory.emplace(std::move(memory));
  }
  return prepared;
}

Result<std::unique_ptr<KvmBackend>> KvmBackend::Create(const GuestLayout& layout,
                                                       std::unique_ptr<KvmPrepared> prepared) {
  // Memory made ahead is used if it has the guest's size: it is in slot 0 already.
  const bool memory_made =
      prepared && prepared->memory && prepared->memory->size() == layout.ram_size;
  GuestMemory memory =
      memory_made ? std::move(*prepared->memory) : FLURRY_TRY(GuestMemory::Create(layout.ram_size));
  if (memory_made) prepared->memory.reset();
  if (layout.huge_end > layout.huge_start) {
    memory.AdviseHugePages(layout.huge_start, layout.huge_end - layout.huge_start);
  }
  auto backend = std::unique_ptr<KvmBackend>(new KvmBackend(std::move(memory), layout));
  backend->shadow_paging_ = ShadowPaging();
  // The guard below the stack is left out of the page tables: touching it faults.
  x86::AddressRange hole{layout.guard_start, x86::kHugePageSize};
  FLURRY_TRY(x86::BuildPageTables(backend->memory_, {&hole, 1}));
  x86::WriteSystemTables(backend->memory_);
  FLURRY_TRY(backend->BuildVm(std::move(prepared), memory_made));
  const int kvm_max = backend->system_->CheckExtension(KVM_CAP_MAX_VCPUS);
  backend->max_lanes_ = std::clamp(kvm_max, 1, x86::kMaxVcpus);
  return backend;
}

Result<void> KvmBackend::BuildVm(std::unique_ptr<KvmPrepared> prepared, bool slot_holds_memory) {
  // Lane threads never cross fork(): a fork needs one lane (PrepareFork).
  FLURRY_CHECK(!threaded_.load());
  direct_run_area_.store(nullptr);
  for (KvmLane& lane : lanes_) {
    lane.run_area.store(nullptr);
    lane.vcpu.reset();
    lane.vcpu_ready = false;
    lane.exists = false;
    lane.active = false;
    lane.phase.store(KvmLane::kParked);
  }
  vm_.reset();
  system_.reset();
  if (!prepared || selected_ != 0) {
    prepared.reset();
    slot_holds_memory = false;
  }
  if (prepared) {
    system_.emplace(std::move(prepared->system));
    vm_.emplace(std::move(prepared->vm));
    lane().vcpu.emplace(std::move(prepared->vcpu));  // set up already: MakeVcpu only marks it
    xcr0_ = prepared->xcr0;
    if (prepared->memory) {  // made ahead with another size: its slot is deleted (size 0)
      FLURRY_TRY(vm_->SetMemoryRegion(0, 0, 0, prepared->memory->host_base()));
      prepared->memory.reset();
    }
  } else {
    system_.emplace(FLURRY_TRY(KvmSystem::Open()));
    vm_.emplace(FLURRY_TRY(KvmVm::Create(*system_)));
  }
  if (!slot_holds_memory) {
    FLURRY_TRY(vm_->SetMemoryRegion(0, 0, memory_.size(), memory_.host_base()));
  }
  FLURRY_TRY(MakeVcpu(selected_, /*set_up=*/!prepared));
  lane().exists = true;
  direct_run_area_.store(lane().run_area.load());
  return {};
}

Result<void> KvmBackend::MakeVcpu(int index, bool set_up) {
  KvmLane& lane = lanes_[static_cast<size_t>(index)];
  // KVM keeps a vCPU's number for the VM's life: one made but not set up is kept, and set up
  // again at the lane's next use.
  if (!lane.vcpu) lane.vcpu.emplace(FLURRY_TRY(KvmVcpu::Create(*system_, *vm_, index)));
  if (set_up) {
    xcr0_ = FLURRY_TRY_CTX(x86::SetupProcessModeVcpu(*system_, *lane.vcpu, index, 0, 0),
                           fmt::format("setting up vCPU {}", index));
  }
  lane.vcpu_ready = true;
  lane.run_area.store(&lane.vcpu->run());
  lane.stopped_ns = -1;  // no run of this VM's vCPU yet
  lane.run_ended_at_ns = 0;
  return {};
}

Result<void> KvmBackend::PrepareFork(bool) {
  if (threaded_.load()) return Fail("a fork needs the guest on one lane (vCPU)");
  return {};
}

Result<void> KvmBackend::LoadCpu(const x86::UserCpuState& state) {
  if (!state.xsave.empty()) {
    if (state.xsave.size() > sizeof(kvm_abi::Xsave)) {
      return Fail("the XSAVE image is {} bytes; KVM takes at most {}", state.xsave.size(),
                  sizeof(kvm_abi::Xsave));
    }
    kvm_abi::Xsave xsave{};
    std::memcpy(&xsave, state.xsave.data(), state.xsave.size());
    FLURRY_TRY_CTX(vcpu().SetXsave(xsave), "loading the FPU state");
  }
  KvmLane& lane = this->lane();
  lane.regs = state.regs;
  kvm_regs k = FromUser(lane.regs);
  // Stopped at CPL0 (in the syscall gate on hardware KVM, or in an exception stub): return to
  // the program through an iretq, which restores every register (sysretq would clobber RCX and
  // R11). A new vCPU, or one stopped in user code, takes the registers as they are.
  if (FLURRY_TRY_CTX(AtCpl0(), "reading the vCPU's privilege level")) {
    const uint64_t frame[5] = {lane.regs.rip, x86::kUserCodeSelector, UserRflags(lane.regs.rflags),
                               lane.regs.rsp, x86::kUserDataSelector};
    const uint64_t frame_at = x86::StacksOfVcpu(selected_).kernel_top - sizeof frame;
    std::memcpy(memory_.HostPointer(frame_at, sizeof frame), frame, sizeof frame);
    k.rip = x86::IretqRip();
    k.rsp = frame_at;
  }
  // Through the sync-regs area: KVM loads them at the next KVM_RUN (no ioctl now).
  vcpu().regs() = k;
  vcpu().MarkRegsDirty();
  lane.segment_bases_dirty = true;
  lane.active = true;
  return ApplySegmentBases(lane);
}

Result<bool> KvmBackend::AtCpl0() {
  // Only KVM_RUN changes the vCPU's CS, so the RIP of its last exit (the sync-regs area, which
  // LoadCpu and CompleteSyscall overwrite only with a RIP of the same privilege level) tells:
  // user code runs at CPL3 only; the gate, entered by `syscall` (IF clear), at CPL3 or CPL0 as
  // probed at the first syscall. A vCPU that never ran has RIP 0 there, and starts at CPL3
  // (SetupProcessModeVcpu). Anything else (an exception stub, the gate entered otherwise or
  // before the probe): ask KVM.
  const kvm_regs& last = vcpu().regs();
  if (!x86::InSystemCode(last.rip)) return false;
  const bool in_gate =
      last.rip >= x86::kSyscallGateAddr && last.rip < x86::kSyscallGateAddr + x86::kPageSize;
  if (in_gate && (last.rflags & kRflagsIf) == 0 && gate_mode_ != GateMode::kUnknown) {
    return gate_mode_ == GateMode::kRaisesCpl;
  }
  const kvm_sregs sregs = FLURRY_TRY(vcpu().GetSregs());
  return (sregs.cs.selector & 3) == 0;
}

Result<void> KvmBackend::BecomeClone(const x86::UserCpuState& state) {
  // The KVM objects inherited through fork() belong to the parent's address space (KVM refuses
  // them here); build new ones around this process's copy of guest memory.
  FLURRY_TRY(BuildVm());
  return LoadCpu(state);
}

Result<void> KvmBackend::ApplySegmentBases(KvmLane& lane) {
  if (!lane.segment_bases_dirty) return {};
  kvm_msr_entry msrs[2] = {};
  msrs[0].index = x86::kMsrFsBase;
  msrs[0].data = lane.regs.fs_base;
  msrs[1].index = x86::kMsrGsBase;
  msrs[1].data = lane.regs.gs_base;
  FLURRY_TRY_CTX(lane.vcpu->SetMsrs(msrs), "setting the guest's FS/GS base");
  lane.segment_bases_dirty = false;
  return {};
}

x86::UserRegs KvmBackend::ToUser(const kvm_regs& k) const {
  x86::UserRegs u = lane().regs;  // keeps the FS/GS bases
  u.rax = k.rax;
  u.rbx = k.rbx;
  u.rcx = k.rcx;
  u.rdx = k.rdx;
  u.rsi = k.rsi;
  u.rdi = k.rdi;
  u.rsp = k.rsp;
  u.rbp = k.rbp;
  u.r8 = k.r8;
  u.r9 = k.r9;
  u.r10 = k.r10;
  u.r11 = k.r11;
  u.r12 = k.r12;
  u.r13 = k.r13;
  u.r14 = k.r14;
  u.r15 = k.r15;
  u.rip = k.rip;
  u.rflags = k.rflags;
  if (k.rip == x86::SyscallGateExitRip()) {
    // Inside the gate (a syscall exit, or a syscall completed but its sysretq not yet run):
    // the user's view is the one after the return.
    u.rip = k.rcx;
    u.rflags = k.r11;
  } else if (const x86::VcpuStacks stacks = x86::StacksOfVcpu(selected_);
             k.rip == x86::IretqRip() && k.rsp >= stacks.bottom &&
             k.rsp <= stacks.kernel_top - 5 * 8) {
    // About to iretq into a register set LoadCpu gave (stopped before it ran): the user's view
    // is the iret frame's.
    uint64_t frame[5];
    std::memcpy(frame, memory_.HostPointer(k.rsp, sizeof frame), sizeof frame);
    u.rip = frame[0];
    u.rflags = frame[2];
    u.rsp = frame[3];
  }
  return u;
}

void KvmBackend::CompleteSyscall(uint64_t rax) {
  x86::UserRegs& regs = lane().regs;
  regs.rax = rax;
  kvm_regs k = FromUser(regs);
  if (gate_mode_ == GateMode::kRaisesCpl) {
    // The gate's sysretq returns to RCX with RFLAGS = R11.
    k.rip = x86::SyscallGateExitRip();
    k.rcx = regs.rip;
    k.r11 = UserRflags(regs.rflags);
  }
  vcpu().regs() = k;
  vcpu().MarkRegsDirty();
}

Result<void> KvmBackend::Protect(const ProtectionMap& protections, uint64_t start,
                                 uint64_t length) {
  tlb_stale_ = true;
  Result<void> applied = page_tables_.Apply(memory_, protections, start, length);
  if (!applied && applied.error().code() == ENOMEM && page_tables_.retired_tables() > 0) {
    // Out of tables but for retired ones: flush every vCPU, which frees them, and go on.
    FLURRY_TRY_CTX(FlushTlb(), "flushing the vCPUs' TLBs for page tables");
    tlb_stale_ = true;
    applied = page_tables_.Apply(memory_, protections, start, length);
  }
  // The one vCPU is stopped, and flushed before it runs: no walk of a retired table is left.
  if (existing_lanes() == 1) page_tables_.ReuseRetired();
  return applied;
}

Result<void> KvmBackend::FlushTlb() {
  // CR3 bit 3 (PWT) only sets the cache type of the PML4 walk; toggling it makes CR3 differ.
  kvm_sregs sregs = FLURRY_TRY(vcpu().GetSregs());
  sregs.cr3 ^= 1ULL << 3;
  FLURRY_TRY(vcpu().SetSregs(sregs));
  if (shadow_paging_ || existing_lanes() > 1) {
    // Removing a memory slot makes KVM zap all its shadow pages (kvm_mmu_zap_all_fast); they
    // are rebuilt from the tables as they are now. Costly, but only on such hosts. It also
    // flushes the TLB of every vCPU, the running ones before the ioctl returns (KVM kicks them
    // out of guest mode): with several lanes, the other lanes' stale translations go too.
    FLURRY_TRY(
        vm_->SetMemoryRegion(kScratchSlot, kScratchSlotGpa, x86::kPageSize, memory_.host_base()));
    FLURRY_TRY(vm_->SetMemoryRegion(kScratchSlot, kScratchSlotGpa, 0, memory_.host_base()));
  }
  // Every vCPU that may run is flushed (several: by the slot; one: by its CR3).
  page_tables_.ReuseRetired();
  tlb_stale_ = false;
  return {};
}

Result<GuestStop> KvmBackend::Run() {
  if (tlb_stale_) FLURRY_TRY_CTX(FlushTlb(), "flushing the vCPU's TLB after page-table edits");
  if (threaded_.load()) return RunLanes();
  FLURRY_TRY(ApplySegmentBases(lane()));
  for (;;) {
    std::optional<GuestStop> stop = FLURRY_TRY(DecodeExit(RunVcpu(lane())));
    if (stop) {
      stop->lane = selected_;
      return std::move(*stop);
    }
  }
}

Result<std::optional<GuestStop>> KvmBackend::DecodeExit(const Result<uint32_t>& reason) {
  KvmLane& lane = this->lane();
  if (!reason) {
    if (reason.error().code() != EINTR) return std::unexpected(reason.error());
    lane.vcpu->ClearImmediateExit();
    lane.regs = ToUser(lane.vcpu->regs());
    return GuestStop{GuestStop::Kind::kInterrupted};
  }
  kvm_run& run = lane.vcpu->run();
  lane.regs = ToUser(lane.vcpu->regs());
  switch (*reason) {
    case KVM_EXIT_MMIO:
      if (run.mmio.phys_addr == x86::kDoorbellGpa && run.mmio.is_write) {
        // Probed at a genuine `syscall` only: SFMASK clears IF, which user code at CPL3 cannot
        // (a guest that jumps into the gate page itself has IF set).
        if (gate_mode_ == GateMode::kUnknown && (lane.vcpu->regs().rflags & kRflagsIf) == 0) {
          kvm_sregs sregs = FLURRY_TRY_CTX(lane.vcpu->GetSregs(), "probing the syscall gate");
          gate_mode_ = (sregs.cs.selector & 3) == 0 ? GateMode::kRaisesCpl : GateMode::kStaysAtCpl3;
        }
        return GuestStop{GuestStop::Kind::kSyscall};
      }
      return Fault(SIGSEGV, "access to unbacked memory");
    case KVM_EXIT_IO:
      if (run.io.port >= x86::kExceptionPortBase &&
          run.io.port < x86::kExceptionPortBase + x86::kExceptionVectors) {
        return Exception(run.io.port - x86::kExceptionPortBase);
      }
      return Fault(SIGSEGV, "unexpected port I/O");
    case KVM_EXIT_SHUTDOWN:
      return Fault(SIGSEGV, "triple fault (vCPU shut down)");
    case KVM_EXIT_HLT:
      return Fault(SIGSEGV, "hlt");
    case KVM_EXIT_INTR:
      return std::nullopt;
    case KVM_EXIT_INTERNAL_ERROR:
      return Fault(SIGILL, fmt::format("KVM internal error {}", run.internal.suberror).c_str());
    default:
      return Fault(SIGSEGV, fmt::format("KVM exit {}", *reason).c_str());
  }
}

Result<GuestStop> KvmBackend::Fault(int signal, const char* what) {
  GuestStop stop{GuestStop::Kind::kFault};
  stop.signal = signal;
  stop.description = fmt::format("guest stopped: {} at rip {:#x}, rsp {:#x}", what, lane().regs.rip,
                                 lane().regs.rsp);
  return stop;
}

Result<GuestStop> KvmBackend::Exception(int vector) {
  // The stub runs on the kernel stack with the CPU-pushed frame at RSP.
  const uint64_t rsp = vcpu().regs().rsp;
  const x86::VcpuStacks stacks = x86::StacksOfVcpu(selected_);
  x86::ExceptionFrame frame{};
  const bool has_error = x86::VectorHasErrorCode(vector);
  const uint64_t frame_size = has_error ? sizeof frame : sizeof frame - 8;
  if (rsp < stacks.bottom || rsp + frame_size > stacks.fault_top) {
    return Fault(x86::VectorSignal(vector), "exception with a corrupt kernel stack");
  }
  std::memcpy(
      has_error ? reinterpret_cast<uint8_t*>(&frame) : reinterpret_cast<uint8_t*>(&frame) + 8,
      memory_.HostPointer(rsp, frame_size), frame_size);
  x86::FaultReport report;
  report.vector = vector;
  report.rip = frame.rip;
  report.rsp = frame.rsp;
  report.error_code = frame.error_code;
  report.has_error_code = has_error;
  if (vector == 14) {
    kvm_sregs sregs = FLURRY_TRY(vcpu().GetSregs());
    report.address = sregs.cr2;
  }
  // `int 0x80` at user level: the guest's IDT gate 0x80 is for the kernel only, so the CPU
  // raises #GP (error code: IDT entry 0x80). A PVM host reports #UD instead; the guest sees the
  // #GP either way (SIGSEGV, as Linux without 32-bit syscalls gives).
  // Instruction bytes, whatever the page's protections (execute-only code is still code).
  auto read_code = [&](uint64_t at, uint8_t* into, uint64_t length) {
    return memory_.CheckUser(at, length).has_value() &&
           memory_.ReadPhysical(at, into, length).has_value();
  };
  if (uint8_t insn[2] = {}; vector == 6 && read_code(frame.rip, insn, sizeof insn) &&
                            insn[0] == 0xcd && insn[1] == 0x80) {
    vector = 13;
    report.vector = vector;
    report.error_code = (0x80 << 3) | 2;
    report.has_error_code = true;
  }
  x86::UserRegs& regs = lane().regs;
  regs.rip = frame.rip;
  regs.rsp = frame.rsp;
  regs.rflags = frame.rflags;  // the vCPU's own are the stub's (interrupts off)
  GuestStop stop{GuestStop::Kind::kFault};
  if (vector == 3) {
    // A breakpoint reports the instruction after it: `int3` (CC) or `int $3` (CD 03). Made
    // again (a thread gathered from another lane) it must stand on it.
    uint8_t before[2] = {};
    if (read_code(frame.rip - 1, &before[1], 1) && before[1] == 0xcc) {
      stop.replay_back = 1;
    } else if (read_code(frame.rip - 2, before, sizeof before) && before[0] == 0xcd &&
               before[1] == 3) {
      stop.replay_back = 2;
    }
  }
  stop.vector = vector;
  stop.signal = x86::VectorSignal(vector);
  stop.description = x86::DescribeFault(report);
  stop.report = report;
  return stop;
}

Result<x86::UserCpuState> KvmBackend::CaptureCpu() {
  x86::UserCpuState state;
  state.regs = lane().regs;
  state.xcr0 = xcr0_;
  kvm_abi::Xsave xsave = FLURRY_TRY_CTX(vcpu().GetXsave(), "capturing the FPU state");
  state.xsave.resize(sizeof xsave);
  std::memcpy(state.xsave.data(), &xsave, sizeof xsave);
  ClearSoftwareBytes(state.xsave);
  return state;
}

Result<Backend::TscInfo> KvmBackend::Tsc() {
  TscInfo info;
  int khz = ioctl(vcpu().fd(), KVM_GET_TSC_KHZ, 0);
  if (khz <= 0) return info;  // unknown: the clock measures it
  kvm_msr_entry tsc{};
  tsc.index = 0x10;  // IA32_TIME_STAMP_COUNTER
  const uint64_t before = __rdtsc();
  FLURRY_TRY_CTX(vcpu().GetMsrs({&tsc, 1}), "reading the guest TSC");
  const uint64_t after = __rdtsc();
  info.guest_minus_host = static_cast<int64_t>(tsc.data - (before + (after - before) / 2));
  info.khz = static_cast<uint64_t>(khz);
  return info;
}

}  // namespace flurry
