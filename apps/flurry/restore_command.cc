#include "restore_command.h"

#include "run_command.h"
#include "vmm/vm.h"

namespace flurry {

CLI::App* AddRestoreCommand(CLI::App& app, RestoreOptions& options) {
  CLI::App* restore =
      app.add_subcommand("restore", "Run a VM from a snapshot directory (flurry ctl ... snapshot)");
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
  AddBackendOption(restore, options.backend);
  restore->add_option("dir", options.directory, "Snapshot directory (descriptor.fvd, memory.img)")
      ->required();
  restore->footer(
      "The guest resumes where the snapshot was taken, with the snapshot's memory size and\n"
      "--dir. Exit status: as `flurry run` (the program's own; 128+N for signal N; 124 on\n"
      "--timeout); 1 when the snapshot cannot be restored.");
  return restore;
}

int RestoreCommand(const RestoreOptions& options) {
  VmConfig config;
  auto backend = BackendOption(options.backend);
  if (!backend) return 2;
  config.backend = *backend;
  config.max_clones_per_ticket = options.max_clones;
  config.clone_output_prefix = !options.no_clone_prefix;
  auto timeout = ParseTimeoutOption(options.timeout);
  if (!timeout) return 2;
  config.timeout = *timeout;

  PrepareVmmProcess();
  auto vm = Vm::Restore(options.directory, config);
  if (!vm) {
    Complain(fmt::format("restoring {}: {}", options.directory, vm.error().message()));
    return 1;
  }
  return RunVm(**vm, RunVmOptions{config.timeout, options.timeout, options.api});
}

}  // namespace flurry
