// `flurry ctl SOCKET status|pause|resume|snapshot DIR|clone N`: one request to the control
// socket of a running flurry (`flurry run --api SOCKET`), printed in human-readable form.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace flurry {

struct CtlOptions {
  std::string socket;
  std::vector<std::string> command;  // the op and its argument
  std::string timeout = "60s";       // how long to wait for the reply
};

// Declares the `ctl` subcommand on `app`.
CLI::App* AddCtlCommand(CLI::App& app, CtlOptions& options);

// Sends the request and prints the reply. Exit status 0 on an ok reply; 1 on an error reply,
// a connection failure or no reply in time (one line "flurry: ..." on stderr); 2 on a usage
// error.
int CtlCommand(const CtlOptions& options);

}  // namespace flurry
