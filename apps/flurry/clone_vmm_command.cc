#include "clone_vmm_command.h"

#include <sys/prctl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "backend/backend.h"
#include "base/spawn.h"
#include "base/unique_fd.h"
#include "fork/clone_vmm_request.h"
#include "restore_command.h"
#include "run_command.h"

namespace flurry {

CLI::App* AddCloneVmmCommand(CLI::App& app, CloneVmmOptions& options) {
  CLI::App* command = app.add_subcommand(
      "clone-vmm", "A clone VMM started ahead of its clone (flurryd; not for people)");
  command->group("");  // hidden from --help
  command->add_option("--backend", options.backend, "The backend to make ahead for");
  command->add_option("--ram-bytes", options.ram_bytes,
                      "The guest memory to make ahead, in bytes (a multiple of 2 MiB; 0: none)");
  command->add_option("--request-fd", options.request_fd, "The socket the request comes on")
      ->required()
      ->check(CLI::Range(3, 1 << 20));
  return command;
}

int CloneVmmCommand(const CloneVmmOptions& options) {
  UniqueFd request_socket(options.request_fd);
  auto kind = BackendOption(options.backend);
  if (!kind) return 2;
  PrepareVmmProcess();
  // What cannot be made ahead is made by the restore, which reports what fails there.
  std::unique_ptr<PreparedBackend> prepared;
  if (auto made = PrepareBackend(*kind, options.ram_bytes)) prepared = std::move(*made);

  auto received = ReceiveCloneVmmRequest(request_socket.get());
  request_socket.Reset();
  if (!received) {
    Complain("clone-vmm: " + received.error().message());
    return 1;
  }
  if (!received->has_value()) return 0;  // flurryd gave up on this VMM
  // A VMM with a clone is named so ("flurry" is one still waiting).
  prctl(PR_SET_NAME, "flurry-clone");
  const CloneVmmRequest& request = **received;
  if (request.args.size() < 2 || request.args[1] != "restore") {
    Complain("clone-vmm: the request is not a `flurry restore` command line");
    return 1;
  }
  if (chdir(request.work_dir.c_str()) != 0) {
    Complain(fmt::format("clone-vmm: entering {}: {}", request.work_dir, std::strerror(errno)));
    return 1;
  }
  if (setenv("FLURRY_PAGE_KEY", request.page_key.c_str(), 1) != 0) {
    Complain("clone-vmm: setting $FLURRY_PAGE_KEY");
    return 1;
  }

  CLI::App app{"flurry"};
  app.require_subcommand(1);
  RestoreOptions restore_options;
  AddRestoreCommand(app, restore_options);
  std::vector<char*> argv = ExecArray(request.args);
  try {
    app.parse(static_cast<int>(request.args.size()), argv.data());
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  return RestoreCommand(restore_options, std::move(prepared));
}

}  // namespace flurry
