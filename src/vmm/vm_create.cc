// Vm::Create: from a VmConfig to a vCPU standing at the program's entry point.
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <fstream>

#include "arch/x86_64/cpu_features.h"
#include "arch/x86_64/layout.h"
#include "base/clock.h"
#include "base/unique_fd.h"
#include "guest/elf.h"
#include "guest/elf_loader.h"
#include "guest/host_dir.h"
#include "vmm/program_image.h"
#include "vmm/vdso.h"
#include "vmm/vm.h"

namespace flurry {
namespace {

using x86::kHugePageSize;

std::string GuestExePath(const std::string& program) {
  size_t slash = program.find_last_of('/');
  return "/" + (slash == std::string::npos ? program : program.substr(slash + 1));
}

}  // namespace

Result<std::unique_ptr<Vm>> Vm::Create(const VmConfig& config) {
  const uint64_t ram = config.memory_size;
  if (ram < x86::kMinRamSize || ram > x86::kMaxRamSize || ram % kHugePageSize != 0) {
    return Fail("--mem {}: must be a multiple of 2 MiB between {} MiB and {} GiB", ram,
                x86::kMinRamSize >> 20, x86::kMaxRamSize >> 30);
  }
  UniqueFd program_fd(open(config.program.c_str(), O_RDONLY | O_CLOEXEC));
  if (!program_fd.valid()) return FailErrno(config.program);
  const ProgramFile program = FLURRY_TRY(ReadProgram(program_fd.get(), config.program, ram));
  const std::span<const uint8_t> file = program.bytes;
  ElfImage elf = FLURRY_TRY_CTX(ParseElf(file), config.program);

  const ProgramLayout program_layout = ProgramLayout::For(ram);
  // Where the image ends is known only after loading, but the address space is made first:
  // check the image against the layout, then advise huge pages above it.
  GuestLayout layout;
  layout.ram_size = ram;
  layout.guard_start = program_layout.mmap_top;
  const LoadedImage placed =
      FLURRY_TRY_CTX(PlaceElf(elf, file.size(), program_layout.mmap_top), config.program);
  layout.huge_start = x86::AlignUp(placed.image_end, kHugePageSize);
  layout.huge_end =
      layout.huge_start < program_layout.mmap_top ? program_layout.mmap_top : layout.huge_start;
  std::unique_ptr<Backend> backend = FLURRY_TRY(CreateBackend(config.backend, layout));
  GuestMemory& memory = backend->memory();
  const uint64_t vdso = FLURRY_TRY(InstallVdso(memory));
  ProgramArgs args{config.argv, config.envp, config.argv.empty() ? config.program : config.argv[0]};
  StartedProgram started =
      FLURRY_TRY_CTX(StartProgram(elf, file, memory, program_layout, args, vdso), config.program);

  GuestState state;
  state.identity.pid = getpid();
  state.identity.ppid = getppid();
  state.identity.tid = state.identity.pid;
  state.identity.exe_path = GuestExePath(config.program);
  state.memory_map = std::move(started.memory_map);
  FLURRY_TRY(ProtectUserMemory(*backend, state.memory_map));
  state.cpu = x86::CpuSignature::OfHost();
  state.start_time_ns = static_cast<uint64_t>(MonotonicNs());  // guest time: a new VM's offset is 0
  if (config.dir) {
    HostDir dir = FLURRY_TRY(HostDir::Open(*config.dir, config.dir_writable));
    state.fds.SetRoot(std::move(dir));
  }

  ForkPolicy policy;
  policy.max_clones_per_ticket = config.max_clones_per_ticket;
  policy.remote = config.remote_clones;
  ForkController fork = FLURRY_TRY(ForkController::Create(policy));

  x86::UserCpuState cpu;
  cpu.regs.rip = started.image.entry;
  cpu.regs.rsp = started.rsp;
  FLURRY_TRY_CTX(backend->LoadCpu(cpu), "setting the CPU at the entry point");

  auto result = std::unique_ptr<Vm>(
      new Vm(std::move(backend), std::move(state), std::move(fork), config.clone_output_prefix));
  result->SetLanes(config.cpus);
  FLURRY_TRY_CTX(result->StartClock(), "starting the guest clock");
  result->exe_fd_ = std::move(program_fd);  // execve("/proc/self/exe") runs it again
  return result;
}

Result<void> ProtectUserMemory(Backend& backend, const MemoryMap& map) {
  return WithContext(
      backend.Protect(map.protections(), x86::kUserBase, map.ram_size() - x86::kUserBase),
      "protecting guest memory");
}

Result<void> Vm::StartClock() {
  const Backend::TscInfo tsc = FLURRY_TRY(backend_->Tsc());
  // A forked process or clone starts a clock of its own, never behind the one it had.
  const uint64_t not_before = clock_.GuestNowNs();
  clock_ = GuestClock();
  return clock_.Start(backend_->memory(), tsc.guest_minus_host, tsc.khz, state_.monotonic_offset_ns,
                      not_before);
}

Vm::Vm(std::unique_ptr<Backend> backend, GuestState state, ForkController fork,
       bool clone_output_prefix)
    : backend_(std::move(backend)),
      state_(std::move(state)),
      syscalls_(SyscallTable::Default()),
      fork_(std::move(fork)),
      clone_output_prefix_(clone_output_prefix) {
  // Clones will share this VM's stdout/stderr: its writes take the family's output lock too.
  state_.fds.ShareOutput(fork_.output_lock(), /*line_buffered=*/false, "");
  SetLanes(1);  // Create and RestoreFrom set what the config asks for
}

Vm::~Vm() {
  // The on-demand handler thread reports failures into this Vm: it ends first.
  if (backend_) backend_->memory().AttachLazy(nullptr);
}

}  // namespace flurry
