// flurry: a microVM monitor whose guests are single static Linux programs.
#include <CLI/CLI.hpp>

#include "descriptor_command.h"
#include "run_command.h"

int main(int argc, char** argv) {
  CLI::App app{"flurry: run static Linux programs in KVM microVMs"};
  app.require_subcommand(1);
  flurry::RunOptions run_options;
  CLI::App* run = flurry::AddRunCommand(app, run_options);
  std::string descriptor_file;
  CLI::App* descriptor_show = flurry::AddDescriptorCommand(app, descriptor_file);
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
  if (descriptor_show->parsed()) return flurry::RunDescriptorShow(descriptor_file);
  return 2;
}
