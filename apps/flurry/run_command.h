// `flurry run`: options and execution.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

namespace flurry {

struct RunOptions {
  std::string memory = "512M";
  std::string dir;
  std::string timeout;
  std::vector<std::string> env;
  int max_clones = 64;
  bool no_clone_prefix = false;
  std::string program;
};

// Declares the `run` subcommand's options on `app`.
CLI::App* AddRunCommand(CLI::App& app, RunOptions& options);

// Runs the program; returns the process exit status for flurry.
int RunCommand(const RunOptions& options, const std::vector<std::string>& guest_args);

}  // namespace flurry
