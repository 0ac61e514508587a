// The floor under flurry's syscall round trip on this machine: a bare KVM guest built with
// flurry's own pieces (page tables, system tables, syscall gate, vCPU setup) that runs
// `syscall` in a loop, served by the smallest possible exit handler (RAX = 0, return to RCX).
// flurry_bench's BM_SyscallAndClock measures the same round trip through the full VMM.
#include <benchmark/benchmark.h>
#include <linux/kvm.h>

#include <chrono>
#include <cstring>

#include "arch/x86_64/cpu_setup.h"
#include "arch/x86_64/layout.h"
#include "arch/x86_64/page_tables.h"
#include "arch/x86_64/system_tables.h"
#include "kvm/kvm_vcpu.h"
#include "kvm/kvm_vm.h"
#include "memory/guest_memory.h"

namespace flurry {
namespace {

void BM_BareSyscallRoundTrip(benchmark::State& state) {
  auto system = KvmSystem::Open();
  if (!system) {
    state.SkipWithError(system.error().message().c_str());
    return;
  }
  auto memory = GuestMemory::Create(64ULL << 20).value();
  (void)x86::BuildPageTables(memory, {});
  x86::WriteSystemTables(memory);
  // loop: mov eax, 39 (getpid); syscall; jmp loop
  const uint8_t code[] = {0xb8, 0x27, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7};
  std::memcpy(memory.HostPointer(x86::kUserBase, sizeof code), code, sizeof code);
  auto vm = KvmVm::Create(*system).value();
  (void)vm.SetMemoryRegion(0, 0, memory.size(), memory.host_base());
  auto vcpu = KvmVcpu::Create(*system, vm, 0).value();
  if (auto r = x86::SetupProcessModeVcpu(*system, vcpu, 0, x86::kUserBase, 32ULL << 20); !r) {
    state.SkipWithError(r.error().message().c_str());
    return;
  }
  bool raises_cpl = false, probed = false;
  for (auto _ : state) {
    auto reason = vcpu.Run();
    if (!reason || *reason != KVM_EXIT_MMIO) {
      state.SkipWithError("unexpected exit");
      return;
    }
    if (!probed) {
      raises_cpl = (vcpu.GetSregs().value().cs.selector & 3) == 0;
      probed = true;
    }
    kvm_regs& regs = vcpu.regs();
    regs.rax = 0;
    if (!raises_cpl) {
      regs.rip = regs.rcx;
      regs.rflags = (regs.r11 & 0x3c7fd7) | 0x2;
    }
    vcpu.MarkRegsDirty();
  }
}  // Time per iteration = one syscall round trip.
BENCHMARK(BM_BareSyscallRoundTrip)->Iterations(20000)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace flurry

BENCHMARK_MAIN();
