// flurry: a microVM monitor whose guests are single static Linux programs.
#include <CLI/CLI.hpp>

#include "clone_vmm_command.h"
#include "cluster_command.h"
#include "ctl_command.h"
#include "descriptor_command.h"
#include "restore_command.h"
#include "run_command.h"

int main(int argc, char** argv) {
  CLI::App app{"flurry: run static Linux programs in KVM microVMs"};
  app.require_subcommand(1);
  flurry::RunOptions run_options;
  CLI::App* run = flurry::AddRunCommand(app, run_options);
  flurry::RestoreOptions restore_options;
  CLI::App* restore = flurry::AddRestoreCommand(app, restore_options);
  flurry::CtlOptions ctl_options;
  CLI::App* ctl = flurry::AddCtlCommand(app, ctl_options);
  std::string descriptor_file;
  CLI::App* descriptor_show = flurry::AddDescriptorCommand(app, descriptor_file);
  flurry::ClusterOptions cluster_options;
  flurry::ClusterCommands cluster = flurry::AddClusterCommand(app, cluster_options);
  flurry::CloneVmmOptions clone_vmm_options;
  CLI::App* clone_vmm = flurry::AddCloneVmmCommand(app, clone_vmm_options);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;  // usage error
  }
  if (run->parsed()) return flurry::RunCommand(run_options, run->remaining());
  if (restore->parsed()) return flurry::RestoreCommand(restore_options);
  if (ctl->parsed()) return flurry::CtlCommand(ctl_options);
  if (descriptor_show->parsed()) return flurry::RunDescriptorShow(descriptor_file);
  if (clone_vmm->parsed()) return flurry::CloneVmmCommand(clone_vmm_options);
  if (cluster.init->parsed()) return flurry::RunClusterInit(cluster_options);
  if (cluster.show->parsed()) return flurry::RunClusterShow(cluster_options);
  if (cluster.status->parsed()) return flurry::RunClusterStatus(cluster_options);
  return 2;
}
