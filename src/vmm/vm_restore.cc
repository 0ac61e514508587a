// Becoming a VM from a descriptor and a memory source: `flurry restore` of a snapshot
// directory or of a page server's snapshot (docs/design.md, "Memory on demand"). The memory is
// copied in before the guest starts, or — on demand — installed page by page as it is touched.
#include <unistd.h>

#include <algorithm>
#include <vector>

#include "arch/x86_64/layout.h"
#include "guest/file_tree.h"
#include "guest/lazy_files.h"
#include "snapshot/descriptor_codec.h"
#include "snapshot/memory_image.h"
#include "snapshot/state_capture.h"
#include "vmm/vdso.h"
#include "vmm/vm.h"

namespace flurry {
namespace {

constexpr uint64_t kPage = x86::kPageSize;
constexpr uint32_t kEagerChunkPages = 256;

GuestLayout LayoutFor(const MemoryLayoutRecord& m, bool on_demand) {
  GuestLayout layout;
  layout.ram_size = m.ram_size;
  layout.huge_start = x86::AlignUp(m.image_end, x86::kHugePageSize);
  layout.huge_end = std::max(layout.huge_start, m.mmap_top);
  layout.guard_start = m.stack_bottom - x86::kHugePageSize;
  layout.on_demand = on_demand;
  return layout;
}

// Copies every populated user page from `source` before the guest runs.
Result<void> CopyAll(const PageMapRecord& pages, PageSource& source, GuestMemory& memory) {
  std::vector<uint8_t> buffer(kEagerChunkPages * kPage);
  for (const auto& run : pages.present) {
    // Runs were validated in decoding; the system area below kUserBase is the backend's own.
    uint64_t page = std::max(run.first_page, x86::kUserBase / kPage);
    const uint64_t end = run.first_page + run.page_count;
    while (page < end) {
      const auto n = static_cast<uint32_t>(std::min<uint64_t>(end - page, kEagerChunkPages));
      FLURRY_TRY_CTX(source.Fetch(page, n, buffer.data()),
                     fmt::format("reading page {:#x} from {}", page * kPage, source.Describe()));
      FLURRY_TRY_CTX(memory.WritePhysical(page * kPage, buffer.data(), n * kPage),
                     "restoring guest memory");
      page += n;
    }
  }
  return {};
}

// A clone on another host: the parent's --dir laid out in `local_root`, filled from `files`.
Result<std::shared_ptr<LazyFiles>> CopyParentFiles(std::unique_ptr<FileSource> files,
                                                   const std::string& local_root,
                                                   const std::optional<std::string>& cache_dir) {
  const std::vector<uint8_t> bytes = FLURRY_TRY(files->FetchFileTree());
  const FileTree tree =
      FLURRY_TRY_CTX(DecodeFileTree(bytes.data(), bytes.size()), "the parent's file tree");
  std::unique_ptr<LazyFiles> lazy =
      FLURRY_TRY_CTX(LazyFiles::Materialize(tree, local_root, std::move(files)),
                     fmt::format("copying the parent's --dir to {}", local_root));
  if (cache_dir) lazy->ShareFetchesThrough(*cache_dir);
  return std::shared_ptr<LazyFiles>(std::move(lazy));
}

}  // namespace

Result<std::unique_ptr<Vm>> Vm::Restore(const std::string& directory, const VmConfig& config) {
  const std::string descriptor_path = directory + "/" + kSnapshotDescriptorFile;
  VmDescriptor d = FLURRY_TRY(ReadDescriptorFile(descriptor_path));
  FLURRY_TRY_CTX(CheckCompatibleWithHost(d, x86::CpuSignature::OfHost()), descriptor_path);
  if (d.processes) return RestoreProcesses(directory, d, config);
  std::unique_ptr<PageSource> source =
      FLURRY_TRY(MemoryImageSource::Open(directory, d.memory.ram_size));
  return RestoreFrom(d, std::move(source), config);
}

Result<std::unique_ptr<Vm>> Vm::RestoreFrom(const VmDescriptor& d,
                                            std::unique_ptr<PageSource> source,
                                            const VmConfig& config,
                                            std::unique_ptr<FileSource> files,
                                            std::unique_ptr<PreparedBackend> prepared,
                                            std::optional<SharedWithProcesses> shared) {
  if (d.processes && !shared) {
    // One VMM would become init alone: the other processes are only in a snapshot directory.
    return Fail(
        "a VM of several processes is restored from its snapshot directory only "
        "(flurry restore DIR)");
  }
  const bool on_demand = config.memory_on_demand;
  std::unique_ptr<Backend> backend = FLURRY_TRY(
      CreateBackend(config.backend, LayoutFor(d.memory, on_demand), std::move(prepared)));
  GuestMemory& memory = backend->memory();
  FLURRY_TRY(InstallVdso(memory));
  if (!on_demand) FLURRY_TRY(CopyAll(d.pages, *source, memory));

  // --dir on the restoring host replaces the recorded one (another host's path).
  std::optional<std::string> root = d.files.root_host_path;
  std::shared_ptr<LazyFiles> lazy_files;
  if (config.clone_of) {
    // A clone of a VM on another host never opens the path its descriptor names (a path on the
    // parent's host; a peer could name "/"): it gets the directory its daemon gave it, if the
    // parent had one at all, and there a copy of the parent's files, fetched as they are
    // opened.
    if (root) root = config.dir;
    if (root && files) {
      lazy_files = FLURRY_TRY_CTX(CopyParentFiles(std::move(files), *root, config.file_cache_dir),
                                  "giving the clone its parent's files");
    }
  } else if (config.dir) {
    root = *config.dir;
  }
  // A clone's clock goes on as its parent's does, across hosts (wall-clock time since the
  // capture counted); a restored snapshot's continues from the captured value (docs/design.md,
  // "The guest clock").
  GuestState state = FLURRY_TRY(
      RestoreGuest(d, config.clone_of ? ClockResume::kPlusWallClock : ClockResume::kFromCapture,
                   root, std::move(lazy_files), shared ? shared->pipes : nullptr,
                   shared ? std::optional(shared->monotonic_offset_ns) : std::nullopt));
  if (config.hostname) state.identity.hostname = *config.hostname;
  ForkPolicy policy;
  policy.max_clones_per_ticket = config.max_clones_per_ticket;
  ForkController fork =
      shared ? std::move(shared->fork) : FLURRY_TRY(ForkController::Create(policy));
  x86::UserCpuState cpu = d.vcpu;
  if (config.clone_of) {
    // A clone made on another host: sf_clone returns its ID, as in a local clone (BecomeClone).
    const VmConfig::CloneOf& c = *config.clone_of;
    FLURRY_TRY_CTX(fork.BecomeRemoteClone(c.family_id, c.id, UniqueFd(c.outcome_fd)),
                   fmt::format("becoming clone {}", c.id));
    cpu.regs.rax = static_cast<uint64_t>(c.id);
    // Its pid, ppid and tid stay the parent's, as in a local clone.
  }
  FLURRY_TRY(ProtectUserMemory(*backend, state.memory_map));
  FLURRY_TRY_CTX(backend->LoadCpu(cpu), "restoring the CPU");
  auto vm = std::unique_ptr<Vm>(
      new Vm(std::move(backend), std::move(state), std::move(fork), config.clone_output_prefix));
  vm->report_memory_stats_ = config.report_memory_stats;
  if (config.clone_of) {
    // Output as a local clone's: whole lines, each with its clone's prefix.
    vm->state_.fds.ShareOutput(
        vm->fork_.output_lock(), /*line_buffered=*/true,
        config.clone_output_prefix ? fmt::format("[clone {}] ", config.clone_of->id) : "");
  }
  if (on_demand) {
    FLURRY_TRY_CTX(vm->AttachOnDemandMemory(d, std::move(source), config),
                   "setting up memory on demand");
  }
  vm->SetLanes(config.cpus);
  FLURRY_TRY_CTX(vm->StartClock(), "starting the guest clock");
  return vm;
}

Result<void> Vm::AttachOnDemandMemory(const VmDescriptor& d, std::unique_ptr<PageSource> source,
                                      const VmConfig& config) {
  UniqueFd uffd = FLURRY_TRY(backend_->TakeUserfault());
  // User memory, without the guard hole below the stack (no mapping there in a stub).
  const uint64_t ram = d.memory.ram_size;
  const uint64_t guard_start = LayoutFor(d.memory, true).guard_start;
  const uint64_t guard_end = guard_start + x86::kHugePageSize;
  std::vector<LazyPages::Range> ranges;
  if (guard_start > x86::kUserBase && guard_end <= ram) {
    ranges.push_back({x86::kUserBase, guard_start});
    if (guard_end < ram) ranges.push_back({guard_end, ram});
  } else {
    ranges.push_back({x86::kUserBase, ram});
  }
  std::vector<LazyPages::Run> populated;
  for (const auto& run : d.pages.present) populated.push_back({run.first_page, run.page_count});
  LazyPages::Options options;
  options.prefetch_pages = config.prefetch_pages;
  options.readahead_pages = config.readahead_pages;
  // Whole 2 MiB regions of the heap and mmap area (where the VM's memory has huge pages) come in
  // as huge pages, where the backend and the kernel allow it.
  options.stage = FLURRY_TRY(backend_->MakeHugeStage());
  const GuestLayout layout = LayoutFor(d.memory, true);
  options.huge_start = layout.huge_start;
  options.huge_end = layout.huge_end;
  options.avoid = config.avoid;
  // Pages the server pushes to every clone (multicast), where it does: optional, so a group
  // this host cannot join only costs the fetches it would have saved.
  auto pushes = source->JoinPushes(ram / x86::kPageSize);
  if (pushes) {
    options.pushes = std::move(*pushes);
  } else {
    std::fprintf(stderr, "flurry: without page pushes from %s: %s\n", source->Describe().c_str(),
                 pushes.error().message().c_str());
  }
  options.on_failure = [this](const Error& error) { FailMemory(error); };
  std::unique_ptr<LazyPages> lazy =
      FLURRY_TRY(LazyPages::Start(std::move(uffd), backend_->ram_host_base(), ram,
                                  std::move(ranges), populated, std::move(source), options));
  backend_->memory().AttachLazy(std::move(lazy));
  return {};
}

void Vm::FailMemory(const Error& error) {
  {
    std::lock_guard lock(control_mutex_);
    if (!memory_failure_) memory_failure_ = error;
  }
  memory_failed_.store(true);
  RequestStop();
}

}  // namespace flurry
