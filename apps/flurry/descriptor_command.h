// `flurry descriptor show FILE`: prints a VM descriptor file in human-readable form.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

namespace flurry {

// Declares `descriptor` with its sub-subcommand `show FILE` (stored in `file`) on `app`.
// Returns the `show` subcommand: dispatch to RunDescriptorShow when it was parsed.
CLI::App* AddDescriptorCommand(CLI::App& app, std::string& file);

// Reads, validates and prints the descriptor: exit status 0. A file that cannot be read or is
// refused prints one line "flurry: <file>: <reason>" on stderr: exit status 1.
int RunDescriptorShow(const std::string& file);

}  // namespace flurry
