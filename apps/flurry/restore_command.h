// `flurry restore DIR | tcp://HOST:PORT`: runs a VM from a snapshot directory written by the
// API's "snapshot" request (docs/formats/snapshot.md), or from a page server started with the
// API's "serve" request (docs/protocols/page_server.md), exactly as `flurry run` runs a new one.
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "backend/backend.h"

namespace flurry {

struct RestoreOptions {
  std::string timeout;
  std::string api;
  int max_clones = 64;
  bool no_clone_prefix = false;
  std::string backend;
  int cpus = 0;        // --cpus: lanes for the guest's threads (0: the host's CPUs)
  std::string memory;  // "eager" or "on-demand" ("": the source's default)
  uint32_t prefetch = 8;
  uint32_t readahead = 1024;  // --readahead: pages a scan is read ahead (0: off)
  std::string avoid = "all";  // --avoid: the avoidance heuristics in use (memory/avoidance.h)
  bool stats = false;         // --stats: the on-demand counters on stderr at the end
  std::string dir;            // --dir: the guest's root on this host, instead of the recorded one
  std::string directory;      // snapshot directory or tcp://HOST:PORT
  // As a clone of a VM on another host (flurryd): --as-clone ID --family HEX --outcome-fd N.
  int32_t as_clone = 0;
  std::string family;
  int outcome_fd = -1;
  std::string hostname;    // --hostname: the guest's uname nodename
  std::string file_cache;  // --file-cache: the host cache of a clone's parent's files
};

// Declares the `restore` subcommand's options on `app`.
CLI::App* AddRestoreCommand(CLI::App& app, RestoreOptions& options);

// Restores and runs the VM; returns flurry's exit status (as `flurry run`). A snapshot that
// cannot be restored is one line "flurry: restoring DIR: <reason>" and exit status 1.
// `prepared`: backend parts made ahead (flurry clone-vmm), used where they fit.
int RestoreCommand(const RestoreOptions& options,
                   std::unique_ptr<PreparedBackend> prepared = nullptr);

}  // namespace flurry
