#include "restore_command.h"

#include <cerrno>
#include <cstdlib>

#include "memory/avoidance.h"
#include "net/page_client.h"
#include "run_command.h"
#include "snapshot/descriptor_codec.h"
#include "vmm/served_files.h"
#include "vmm/vm.h"

namespace flurry {
namespace {

Result<std::unique_ptr<Vm>> RestoreFromServer(const std::string& address, const VmConfig& config,
                                              std::unique_ptr<PreparedBackend> prepared) {
  // The key comes with the address, or (for flurryd's clones: not on a command line anyone on
  // the host can read) from $FLURRY_PAGE_KEY.
  std::optional<PageKey> env_key;
  if (const char* hex = std::getenv("FLURRY_PAGE_KEY"); hex != nullptr && *hex != '\0') {
    env_key = FLURRY_TRY_CTX(PageKey::FromHex(hex), "$FLURRY_PAGE_KEY");
  }
  const PageServerAddress server = FLURRY_TRY(ParsePageServerAddress(address, env_key));
  std::unique_ptr<PageClient> client = FLURRY_TRY(PageClient::Connect(server));
  const std::vector<uint8_t> bytes = FLURRY_TRY(client->FetchDescriptor());
  VmDescriptor descriptor = FLURRY_TRY_CTX(DecodeDescriptor(bytes), "the served descriptor");
  FLURRY_TRY(CheckCompatibleWithHost(descriptor, x86::CpuSignature::OfHost()));
  // A clone whose parent had a --dir reads its parent's files over a connection of its own.
  std::unique_ptr<FileSource> files;
  if (config.clone_of && config.dir && descriptor.files.root_host_path) {
    files = std::make_unique<PageServerFiles>(FLURRY_TRY_CTX(
        PageClient::Connect(server), "connecting to the page server for the parent's files"));
  }
  return Vm::RestoreFrom(descriptor, std::move(client), config, std::move(files),
                         std::move(prepared));
}

bool ParseHexFamily(const std::string& text, uint64_t* family) {
  if (text.empty() || text.size() > 16) return false;
  char* end = nullptr;
  errno = 0;
  *family = std::strtoull(text.c_str(), &end, 16);
  return errno == 0 && end != nullptr && *end == '\0';
}

}  // namespace

CLI::App* AddRestoreCommand(CLI::App& app, RestoreOptions& options) {
  CLI::App* restore =
      app.add_subcommand("restore",
                         "Run a VM from a snapshot directory (flurry ctl ... snapshot) or from a "
                         "page server (flurry ctl ... serve)");
  restore->add_option("--timeout", options.timeout,
                      "Stop the guest after this long (e.g. 10s, 500ms); exit status 124");
  restore->add_option("--api", options.api,
                      "Serve the control API (flurry ctl, docs/protocols/api.md) on this Unix "
                      "socket");
  restore
      ->add_option("--max-clones", options.max_clones,
                   "Most clones one sf_request_ticket may grant")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  restore->add_flag("--no-clone-prefix", options.no_clone_prefix,
                    "Do not prefix clone output lines with [clone N]");
  AddBackendOption(restore, options.backend, options.cpus);
  restore
      ->add_option("--memory", options.memory,
                   "eager: copy guest memory in before the guest starts (default for a "
                   "directory); on-demand: install each page when it is first touched (default "
                   "for tcp://)")
      ->check(CLI::IsMember({"eager", "on-demand"}));
  restore
      ->add_option("--prefetch", options.prefetch,
                   "On demand: pages a fault fetches (the faulting one and those after it); "
                   "while faults follow each other sequentially the window doubles, up to 64")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  restore
      ->add_option("--readahead", options.readahead,
                   "On demand: once faults scan memory in order, the pages ahead of the scan are "
                   "streamed in (pipelined requests) up to this many pages ahead; 0: off")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 20));
  restore
      ->add_option("--avoid", options.avoid,
                   "On demand: the avoidance heuristics to use, to measure what each saves: all, "
                   "none, or a comma list of zero (never-populated pages are zero-filled here), "
                   "fresh (memory allocated after the image is never fetched), overwritten (a "
                   "page read(2) overwrites whole is not fetched). Off, the page is fetched; "
                   "the guest reads the same")
      ->capture_default_str();
  restore->add_flag("--stats", options.stats,
                    "At the end, print the memory-on-demand counters to stderr (one line)");
  restore->add_option("--dir", options.dir,
                      "The guest's root directory on this host (default: the recorded --dir)");
  restore->add_option("--hostname", options.hostname, "The guest's uname() nodename");
  restore->add_option("--file-cache", options.file_cache,
                      "With --as-clone: a directory shared by the clones of one sf_clone on this "
                      "host, so that each of the parent's files is fetched once (flurryd)");
  // Set by flurryd, which runs a clone of a VM on another host this way.
  restore
      ->add_option("--as-clone", options.as_clone,
                   "Run as clone ID of the served VM (flurryd): sf_clone returns ID")
      ->check(CLI::Range(1, INT32_MAX));
  restore->add_option("--family", options.family, "With --as-clone: the clone family (hex)");
  restore
      ->add_option("--outcome-fd", options.outcome_fd,
                   "With --as-clone: the inherited fd the clone's outcome is sent on")
      ->check(CLI::Range(3, 1 << 20));
  restore
      ->add_option("source", options.directory,
                   "Snapshot directory (descriptor.fvd, memory.img), or tcp://HOST:PORT/KEY of a "
                   "page server (flurry ctl SOCK serve)")
      ->required();
  restore->footer(
      "The guest resumes where the snapshot was taken, with the snapshot's memory size and\n"
      "--dir. Exit status: as `flurry run` (the program's own; 128+N for signal N; 124 on\n"
      "--timeout); 1 when the snapshot cannot be restored, or when its memory stops being\n"
      "available (a page server that went away).");
  return restore;
}

int RestoreCommand(const RestoreOptions& options, std::unique_ptr<PreparedBackend> prepared) {
  VmConfig config;
  auto backend = BackendOption(options.backend);
  if (!backend) return 2;
  config.backend = *backend;
  config.cpus = options.cpus;
  config.max_clones_per_ticket = options.max_clones;
  config.clone_output_prefix = !options.no_clone_prefix;
  auto timeout = ParseTimeoutOption(options.timeout);
  if (!timeout) return 2;
  config.timeout = *timeout;

  const bool remote = options.directory.starts_with("tcp://");
  config.memory_on_demand = options.memory.empty() ? remote : options.memory == "on-demand";
  config.prefetch_pages = options.prefetch;
  config.readahead_pages = options.readahead;
  auto avoid = ParseAvoidance(options.avoid);
  if (!avoid) {
    Complain("--avoid " + avoid.error().message());
    return 2;
  }
  config.avoid = *avoid;
  config.report_memory_stats = options.stats;
  if (!options.dir.empty()) config.dir = options.dir;
  if (!options.hostname.empty()) config.hostname = options.hostname;
  if (!options.file_cache.empty()) config.file_cache_dir = options.file_cache;
  if (options.as_clone != 0 || !options.family.empty() || options.outcome_fd >= 0) {
    uint64_t family = 0;
    if (options.as_clone == 0 || options.outcome_fd < 0 ||
        !ParseHexFamily(options.family, &family)) {
      Complain("--as-clone ID, --family HEX and --outcome-fd N go together");
      return 2;
    }
    config.clone_of = VmConfig::CloneOf{family, options.as_clone, options.outcome_fd};
  }

  PrepareVmmProcess();
  auto vm = remote ? RestoreFromServer(options.directory.substr(6), config, std::move(prepared))
                   : Vm::Restore(options.directory, config);
  if (!vm) {
    Complain(fmt::format("restoring {}: {}", options.directory, vm.error().message()));
    return 1;
  }
  const int status = RunVm(**vm, RunVmOptions{config.timeout, options.timeout, options.api});
  if (options.stats) {
    if (auto m = (*vm)->memory().lazy_stats()) {
      const std::string line = "flurry: memory on demand: " + FormatLazyStats(*m) + "\n";
      (void)!write(2, line.data(), line.size());
    }
  }
  return status;
}

}  // namespace flurry
