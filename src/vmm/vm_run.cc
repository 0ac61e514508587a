// Vm::Run: the vCPU loop and its exit handlers.
#include <linux/kvm.h>

#include <csignal>
#include <cstring>

#include "arch/x86_64/cpu_setup.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/system_tables.h"
#include "vmm/vm.h"

namespace flurry {

Result<GuestExit> Vm::Run() {
  vcpu_thread_.store(pthread_self());
  vcpu_thread_known_.store(true);
  Result<GuestExit> exit = RunLoop();
  {
    // Anyone still waiting on a control request gets an answer.
    std::lock_guard lock(control_mutex_);
    exited_ = true;
    for (PendingControl* pending : control_queue_) {
      pending->reply = ControlReply::Failure("the guest has exited", "exited");
      pending->done = true;
    }
    control_queue_.clear();
    control_cv_.notify_all();
  }
  if (fork_.is_clone()) {
    EndClone(exit ? *exit
                  : GuestExit{GuestExit::Kind::kSignaled, 0, SIGKILL,
                              "running the clone: " + exit.error().message()});
  }
  fork_.KillOutstanding();
  return exit;
}

Result<GuestExit> Vm::RunLoop() {
  for (;;) {
    if (stop_requested_.load()) return GuestExit{GuestExit::Kind::kTimedOut, 0, 0, ""};
    auto reason = vcpu_.Run();
    if (!reason) {
      if (reason.error().code() == EINTR) {
        vcpu_.run().immediate_exit = 0;
        FLURRY_TRY(ServeControl());
        continue;
      }
      return std::unexpected(reason.error());
    }
    kvm_run& run = vcpu_.run();
    switch (*reason) {
      case KVM_EXIT_MMIO:
        if (run.mmio.phys_addr == x86::kDoorbellGpa && run.mmio.is_write) {
          auto done = FLURRY_TRY(HandleSyscall());
          if (done) return *done;
          continue;
        }
        return GuestExit{GuestExit::Kind::kSignaled, 0, SIGSEGV,
                         DescribeFailure("access to unbacked memory")};
      case KVM_EXIT_IO:
        if (run.io.port >= x86::kExceptionPortBase &&
            run.io.port < x86::kExceptionPortBase + x86::kExceptionVectors) {
          return HandleException(run.io.port - x86::kExceptionPortBase);
        }
        return GuestExit{GuestExit::Kind::kSignaled, 0, SIGSEGV,
                         DescribeFailure("unexpected port I/O")};
      case KVM_EXIT_SHUTDOWN:
        return GuestExit{GuestExit::Kind::kSignaled, 0, SIGSEGV,
                         DescribeFailure("triple fault (vCPU shut down)")};
      case KVM_EXIT_HLT:
        return GuestExit{GuestExit::Kind::kSignaled, 0, SIGSEGV, DescribeFailure("hlt")};
      case KVM_EXIT_INTR:
        continue;
      case KVM_EXIT_INTERNAL_ERROR:
        return GuestExit{
            GuestExit::Kind::kSignaled, 0, SIGILL,
            DescribeFailure(fmt::format("KVM internal error {}", run.internal.suberror).c_str())};
      default:
        return GuestExit{GuestExit::Kind::kSignaled, 0, SIGSEGV,
                         DescribeFailure(fmt::format("KVM exit {}", *reason).c_str())};
    }
  }
}

Result<std::optional<GuestExit>> Vm::HandleSyscall() {
  kvm_regs& regs = vcpu_.regs();
  if (gate_mode_ == GateMode::kUnknown) {
    kvm_sregs sregs = FLURRY_TRY_CTX(vcpu_.GetSregs(), "probing the syscall gate");
    gate_mode_ = (sregs.cs.selector & 3) == 0 ? GateMode::kRaisesCpl : GateMode::kStaysAtCpl3;
  }
  ++syscall_count_;
  SyscallArgs args{regs.rax, {regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9}};
  SyscallContext context{memory_, state_, &stop_requested_};
  SyscallResult result = ForkController::IsHypercall(args.nr) ? fork_.Handle(context, args, *this)
                                                              : syscalls_.Dispatch(context, args);
  if (vcpu_replaced_) {  // this process just became a clone; its vCPU is fully set up
    vcpu_replaced_ = false;
    return std::nullopt;
  }
  switch (result.action) {
    case SyscallResult::Action::kExit:
      return GuestExit{GuestExit::Kind::kExited, static_cast<int>(result.value), 0, ""};
    case SyscallResult::Action::kKill: {
      const int signal = static_cast<int>(result.value);
      const char* name = sigabbrev_np(signal);
      return GuestExit{GuestExit::Kind::kSignaled, 0, signal,
                       fmt::format("guest killed by SIG{} it raised itself (syscall {})",
                                   name ? name : "?", args.nr)};
    }
    case SyscallResult::Action::kReturn:
      break;
  }
  regs = ResumeRegs(static_cast<uint64_t>(result.value));
  vcpu_.MarkRegsDirty();
  clock_.Refresh(memory_);
  if (state_.segment_bases.dirty) FLURRY_TRY(ApplySegmentBases());
  return std::nullopt;
}

kvm_regs Vm::ResumeRegs(uint64_t rax) const {
  kvm_regs regs = vcpu_.regs();
  regs.rax = rax;
  if (gate_mode_ == GateMode::kStaysAtCpl3) {
    // Do what the gate's sysretq would have done.
    regs.rip = regs.rcx;
    regs.rflags = (regs.r11 & 0x3c7fd7) | 0x2;
  }
  return regs;
}

Result<void> Vm::ApplySegmentBases() {
  kvm_msr_entry msrs[2] = {};
  msrs[0].index = x86::kMsrFsBase;
  msrs[0].data = state_.segment_bases.fs_base;
  msrs[1].index = x86::kMsrGsBase;
  msrs[1].data = state_.segment_bases.gs_base;
  FLURRY_TRY_CTX(vcpu_.SetMsrs(msrs), "setting the guest's FS/GS base");
  state_.segment_bases.dirty = false;
  return {};
}

void Vm::RequestStop() {
  stop_requested_.store(true);
  {
    std::lock_guard lock(control_mutex_);
    control_cv_.notify_all();  // a paused vCPU thread wakes up and sees the stop
  }
  vcpu_.RequestImmediateExit();
  if (vcpu_thread_known_.load()) pthread_kill(vcpu_thread_.load(), SIGUSR1);
}

}  // namespace flurry
