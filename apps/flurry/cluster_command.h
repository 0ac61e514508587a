// `flurry cluster init DIR ...` and `flurry cluster show FILE`: making a cluster's configuration
// (the cluster file and its mutual-TLS credentials) and printing it. Format:
// docs/formats/cluster.md.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

namespace flurry {

struct ClusterOptions {
  // init
  std::string dir;
  std::string name;
  std::vector<std::string> hosts;    // NAME=IP:PORT[:SLOTS]
  std::vector<std::string> members;  // extra credentials; none given: "client"
  // show, status
  std::string file;
  std::string member = "client";  // status: the credentials presented
};

struct ClusterCommands {
  CLI::App* init = nullptr;
  CLI::App* show = nullptr;
  CLI::App* status = nullptr;
};

// Declares `cluster` with its sub-subcommands `init` and `show` on `app`.
ClusterCommands AddClusterCommand(CLI::App& app, ClusterOptions& options);

// Writes DIR/cluster.json (credentials "creds") and creates DIR/creds with a CA and credentials
// for every host and member; the last stdout line is the cluster file's absolute path. Exit
// status 0; 2 on a usage error (a malformed --host, an invalid name, address or slot count:
// nothing is written); 1 when DIR already holds a cluster file or a CA, or writing fails. Errors
// are one line "flurry: cluster init: ..." on stderr.
int RunClusterInit(const ClusterOptions& options);

// Prints the hosts of a cluster file as a table (name, address, slots, memory). Exit status 0;
// 1 when the file cannot be read or is refused ("flurry: cluster show: ..." on stderr).
int RunClusterShow(const ClusterOptions& options);

// Asks every host's flurryd for its status (through flurry-remote, which speaks gRPC; this
// static program does not) and prints a table: name, address, slots, running clones, memory,
// or why a host did not answer. Exit status: 0 when every host answered; 1 otherwise.
int RunClusterStatus(const ClusterOptions& options);

}  // namespace flurry
