// Vm::Create: from a VmConfig to a vCPU standing at the program's entry point.
#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ctime>
#include <fstream>

#include "arch/x86_64/cpu_features.h"
#include "arch/x86_64/layout.h"
#include "base/unique_fd.h"
#include "guest/elf.h"
#include "guest/elf_loader.h"
#include "guest/host_dir.h"
#include "guest/initial_stack.h"
#include "vmm/vdso.h"
#include "vmm/vm.h"

namespace flurry {
namespace {

using x86::kHugePageSize;

// The program file's bytes: mapped read-only (a private snapshot of the page cache; reading
// it into fresh memory cost ~3 ms of page faults for a 750 KiB program on a nested host).
struct ProgramFile {
  Mapping mapping;
  std::span<const uint8_t> bytes;
};

// Maps the whole program file, refusing files larger than the guest could hold.
Result<ProgramFile> ReadProgram(const std::string& path, uint64_t limit) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return FailErrno(path);
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return FailErrno(path);
  if (!S_ISREG(st.st_mode)) return Fail("{}: not a regular file", path);
  if (static_cast<uint64_t>(st.st_size) > limit) {
    return Fail("{}: program is {} MiB, larger than guest memory ({} MiB; raise --mem)", path,
                st.st_size >> 20, limit >> 20);
  }
  ProgramFile program;
  if (st.st_size == 0) return program;  // ParseElf says what is wrong with it
  program.mapping =
      FLURRY_TRY_CTX(Mapping::ReadOnlyFile(fd.get(), static_cast<size_t>(st.st_size)), path);
  program.bytes = std::span<const uint8_t>(program.mapping.data(), program.mapping.size());
  return program;
}

uint64_t MonotonicNs() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

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
  const ProgramFile program = FLURRY_TRY(ReadProgram(config.program, ram));
  const std::span<const uint8_t> file = program.bytes;
  ElfImage elf = FLURRY_TRY_CTX(ParseElf(file), config.program);

  // Memory layout (see guest/memory_map.h): stack at the top, a guard below it.
  const uint64_t stack_bottom = ram - VmConfig::kStackSize;
  const uint64_t guard = stack_bottom - kHugePageSize;
  const uint64_t mmap_top = guard;
  // Where the image ends is known only after loading, but the address space is made first:
  // check the image against the layout, then advise huge pages above it.
  GuestLayout layout;
  layout.ram_size = ram;
  layout.guard_start = guard;
  const LoadedImage placed = FLURRY_TRY_CTX(PlaceElf(elf, file.size(), mmap_top), config.program);
  layout.huge_start = x86::AlignUp(placed.image_end, kHugePageSize);
  layout.huge_end = layout.huge_start < mmap_top ? mmap_top : layout.huge_start;
  std::unique_ptr<Backend> backend = FLURRY_TRY(CreateBackend(config.backend, layout));
  GuestMemory& memory = backend->memory();
  LoadedImage image = FLURRY_TRY_CTX(LoadElf(elf, file, memory, mmap_top), config.program);
  const uint64_t vdso = FLURRY_TRY(InstallVdso(memory));

  StackInputs stack{};
  stack.argv = config.argv;
  stack.envp = config.envp;
  stack.execfn = config.argv.empty() ? config.program : config.argv[0];
  if (getrandom(stack.random.data(), stack.random.size(), 0) !=
      static_cast<ssize_t>(stack.random.size())) {
    return FailErrno("getrandom for AT_RANDOM");
  }
  stack.phdr = image.phdr_addr;
  stack.phent = image.phent;
  stack.phnum = image.phnum;
  stack.entry = image.entry;
  stack.hwcap = x86::HostHwcap();
  stack.hwcap2 = 0;
  stack.minsigstksz = x86::MinSigStackSize();
  stack.vdso_base = vdso;
  InitialStack initial = FLURRY_TRY(BuildInitialStack(stack, ram, VmConfig::kStackSize / 2));
  const uint64_t rsp = FLURRY_TRY(PlaceInitialStack(initial, memory));

  GuestState state;
  state.identity.pid = getpid();
  state.identity.ppid = getppid();
  state.identity.tid = state.identity.pid;
  state.identity.exe_path = GuestExePath(config.program);
  state.memory_map = MemoryMap(image.image_start, image.image_end, mmap_top, stack_bottom, ram);
  for (const LoadedImage::Pages& pages : image.segment_pages) {
    FLURRY_TRY_CTX(state.memory_map.Protect(pages.start, pages.length, pages.prot),
                   "protecting the program's segments");
  }
  if (image.executable_stack) {
    FLURRY_TRY(state.memory_map.Protect(stack_bottom, ram - stack_bottom, kProtAll));
  }
  (void)state.memory_map.TakeProtectionChanges();
  FLURRY_TRY(ProtectUserMemory(*backend, state.memory_map));
  state.cpu = x86::CpuSignature::OfHost();
  state.start_time_ns = MonotonicNs();  // guest time: a new VM's offset is 0
  if (config.dir) {
    HostDir dir = FLURRY_TRY(HostDir::Open(*config.dir, config.dir_writable));
    state.fds.SetRoot(std::move(dir));
  }

  ForkPolicy policy;
  policy.max_clones_per_ticket = config.max_clones_per_ticket;
  policy.remote = config.remote_clones;
  ForkController fork = FLURRY_TRY(ForkController::Create(policy));

  x86::UserCpuState cpu;
  cpu.regs.rip = image.entry;
  cpu.regs.rsp = rsp;
  FLURRY_TRY_CTX(backend->LoadCpu(cpu), "setting the CPU at the entry point");

  auto result = std::unique_ptr<Vm>(
      new Vm(std::move(backend), std::move(state), std::move(fork), config.clone_output_prefix));
  FLURRY_TRY_CTX(result->StartClock(), "starting the guest clock");
  return result;
}

Result<void> ProtectUserMemory(Backend& backend, const MemoryMap& map) {
  return WithContext(
      backend.Protect(map.protections(), x86::kUserBase, map.ram_size() - x86::kUserBase),
      "protecting guest memory");
}

Result<void> Vm::StartClock() {
  const Backend::TscInfo tsc = FLURRY_TRY(backend_->Tsc());
  return clock_.Start(backend_->memory(), tsc.guest_minus_host, tsc.khz,
                      state_.monotonic_offset_ns);
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
}

Vm::~Vm() {
  // The on-demand handler thread reports failures into this Vm: it ends first.
  if (backend_) backend_->memory().AttachLazy(nullptr);
}

}  // namespace flurry
