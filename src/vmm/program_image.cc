#include "vmm/program_image.h"

#include <sys/random.h>
#include <sys/stat.h>

#include "arch/x86_64/cpu_features.h"
#include "arch/x86_64/layout.h"
#include "guest/initial_stack.h"
#include "vmm/vm_config.h"

namespace flurry {

Result<ProgramFile> ReadProgram(int fd, const std::string& name, uint64_t limit) {
  struct stat st {};
  if (fstat(fd, &st) != 0) return FailErrno(name);
  if (!S_ISREG(st.st_mode)) {
    return std::unexpected(Error(EACCES, fmt::format("{}: not a regular file", name)));
  }
  if (static_cast<uint64_t>(st.st_size) > limit) {
    return std::unexpected(
        Error(EFBIG, fmt::format("{}: program is {} MiB, larger than guest memory ({} MiB; raise "
                                 "--mem)",
                                 name, st.st_size >> 20, limit >> 20)));
  }
  ProgramFile program;
  if (st.st_size == 0) return program;  // ParseElf says what is wrong with it
  program.mapping =
      FLURRY_TRY_CTX(Mapping::ReadOnlyFile(fd, static_cast<size_t>(st.st_size)), name);
  program.bytes = std::span<const uint8_t>(program.mapping.data(), program.mapping.size());
  return program;
}

ProgramLayout ProgramLayout::For(uint64_t ram) {
  ProgramLayout layout;
  layout.ram = ram;
  layout.stack_bottom = ram - VmConfig::kStackSize;
  layout.mmap_top = layout.stack_bottom - x86::kHugePageSize;
  return layout;
}

Result<StartedProgram> StartProgram(const ElfImage& elf, std::span<const uint8_t> file,
                                    GuestMemory& memory, const ProgramLayout& layout,
                                    const ProgramArgs& args, uint64_t vdso) {
  StartedProgram started;
  started.image = FLURRY_TRY(LoadElf(elf, file, memory, layout.mmap_top));
  const LoadedImage& image = started.image;
  StackInputs stack{};
  stack.argv = args.argv;
  stack.envp = args.envp;
  stack.execfn = args.execfn;
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
  InitialStack initial = FLURRY_TRY(BuildInitialStack(stack, layout.ram, VmConfig::kStackSize / 2));
  started.rsp = FLURRY_TRY(PlaceInitialStack(initial, memory));

  started.memory_map = MemoryMap(image.image_start, image.image_end, layout.mmap_top,
                                 layout.stack_bottom, layout.ram);
  for (const LoadedImage::Pages& pages : image.segment_pages) {
    FLURRY_TRY_CTX(started.memory_map.Protect(pages.start, pages.length, pages.prot),
                   "protecting the program's segments");
  }
  if (image.executable_stack) {
    FLURRY_TRY(started.memory_map.Protect(layout.stack_bottom, layout.ram - layout.stack_bottom,
                                          kProtAll));
  }
  (void)started.memory_map.TakeProtectionChanges();
  return started;
}

}  // namespace flurry
