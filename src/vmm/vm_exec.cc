// execve/execveat: the calling process runs another static program from --dir (or itself
// again: /proc/self/exe). Everything that can fail for the guest's reasons (arguments, the
// file, its format and size) is checked first and fails the syscall; only then is the old
// program given up: the other threads end, user memory is discarded and the new program
// loaded, as Linux's point of no return. See docs/design.md ("Processes").
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>

#include "arch/x86_64/layout.h"
#include "guest/exec_request.h"
#include "guest/posix_timers.h"
#include "vmm/program_image.h"
#include "vmm/vm.h"

namespace flurry {

Result<std::optional<GuestExit>> Vm::Exec(const SyscallArgs& args, SyscallResult* failure) {
  SyscallContext context{.memory = backend_->memory(), .state = state_};
  Result<ExecRequest> read = ReadExecRequest(context, args, exe_fd_.get());
  if (!read) {
    *failure = ErrnoFrom(read.error());
    return std::nullopt;
  }
  ExecRequest request = std::move(*read);
  const uint64_t ram = backend_->memory().size();
  Result<ProgramFile> program = ReadProgram(request.file.get(), request.path, ram);
  Result<ElfImage> elf = program ? ParseElf(program->bytes) : std::unexpected(program.error());
  const ProgramLayout layout = ProgramLayout::For(ram);
  Result<LoadedImage> placed =
      elf ? PlaceElf(*elf, program->bytes.size(), layout.mmap_top) : std::unexpected(elf.error());
  if (!placed) {
    // Not a program flurry runs (a script, a dynamic executable, too large): ENOEXEC, as for
    // a file the kernel has no loader for. Say why once per VMM (a shell tries PATH entries).
    const int code = !program ? program.error().code_or(ENOEXEC) : ENOEXEC;
    if (code == ENOEXEC && !exec_refusal_reported_) {
      exec_refusal_reported_ = true;
      std::fprintf(stderr, "flurry: execve %s: %s\n", request.path.c_str(),
                   placed.error().message().c_str());
    }
    *failure = SyscallResult::Errno(code);
    return std::nullopt;
  }

  // The point of no return: from here a failure ends the process (SIGKILL, as Linux's).
  auto fatal = [&](const Error& error) -> Result<std::optional<GuestExit>> {
    return GuestExit{GuestExit::Kind::kSignaled, 0, SIGKILL,
                     fmt::format("execve {}: {}", request.path, error.message())};
  };
  // The other threads end: those running on other lanes stop first.
  if (Result<void> gathered = GatherLanes(); !gathered) return fatal(gathered.error());
  state_.threads.others.clear();
  state_.identity.tid = state_.identity.pid;
  state_.identity.clear_child_tid = 0;
  state_.identity.robust_list = 0;
  state_.identity.robust_list_len = 0;
  GuestMemory& memory = backend_->memory();
  // The old program's memory — image and heap, mmap regions, stack — reads as zero again.
  const MemoryMap& old_map = state_.memory_map;
  std::vector<std::pair<uint64_t, uint64_t>> old_ranges(old_map.regions().begin(),
                                                        old_map.regions().end());
  old_ranges.emplace_back(old_map.image_start(),
                          x86::AlignUp(old_map.brk(), x86::kPageSize) - old_map.image_start());
  old_ranges.emplace_back(old_map.stack_bottom(), old_map.ram_size() - old_map.stack_bottom());
  for (const auto& [start, length] : old_ranges) {
    if (auto d = memory.Discard(start, length); !d) return fatal(d.error());
  }
  ProgramArgs program_args{std::move(request.argv), std::move(request.envp), request.path};
  Result<StartedProgram> started =
      StartProgram(*elf, program->bytes, memory, layout, program_args, x86::kVdsoAddr);
  if (!started) return fatal(started.error());
  state_.memory_map = std::move(started->memory_map);
  if (auto p = ProtectUserMemory(*backend_, state_.memory_map); !p) return fatal(p.error());
  state_.identity.exe_path = request.exe_path;
  // The new name is the file name execve was given ("exe" for /proc/self/exe), as Linux's.
  state_.identity.comm = request.path.substr(request.path.find_last_of('/') + 1).substr(0, 15);
  // Handlers are the old program's: caught signals go back to SIG_DFL; ignored ones stay.
  SignalState& signals = state_.signals;
  for (GuestSigaction& action : signals.actions) {
    if (action.handler != reinterpret_cast<uint64_t>(SIG_IGN)) action = GuestSigaction{};
  }
  processes_.SetNoZombies(ChildrenLeaveNoZombies(signals));  // SA_NOCLDWAIT goes
  signals.altstack = GuestStack{};
  DeleteAllTimers(state_);  // timer_create's timers go (the interval timer stays, as Linux's)
  state_.fds.CloseOnExec();
  // The registers and the FPU/SSE/AVX state start as Linux's exec leaves them: zero, with the
  // x87 control word and MXCSR at their defaults (an image of the captured size and XCR0).
  Result<x86::UserCpuState> old_cpu = CaptureCpu();
  if (!old_cpu) return fatal(old_cpu.error());
  x86::UserCpuState cpu;
  cpu.xcr0 = old_cpu->xcr0;
  cpu.xsave.assign(std::max<size_t>(old_cpu->xsave.size(), x86::UserCpuState::kMinXsaveBytes), 0);
  const uint16_t fcw = 0x37f;
  const uint32_t mxcsr = 0x1f80;
  std::memcpy(cpu.xsave.data(), &fcw, sizeof fcw);
  std::memcpy(cpu.xsave.data() + 24, &mxcsr, sizeof mxcsr);
  if (old_cpu->xsave.size() >= 32) {  // MXCSR_MASK: the CPU's, as captured
    std::memcpy(cpu.xsave.data() + 28, old_cpu->xsave.data() + 28, 4);
  }
  cpu.regs.rip = started->image.entry;
  cpu.regs.rsp = started->rsp;
  state_.segment_bases = SegmentBases{};
  if (auto l = backend_->LoadCpu(cpu); !l) return fatal(l.error());
  exe_fd_ = std::move(request.file);
  cpu_replaced_ = true;
  return std::nullopt;
}

}  // namespace flurry
