// `flurry run`: options and execution; and RunVm, the part `flurry run` and `flurry restore`
// share (run a Vm with the --timeout watchdog and the --api socket, report how it ended).
#pragma once

#include <CLI/CLI.hpp>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace flurry {

class Vm;

struct RunOptions {
  std::string memory = "512M";
  std::string dir;
  std::string timeout;
  std::string api;  // --api SOCKET: serve docs/protocols/api.md there while the VM runs
  std::vector<std::string> env;
  int max_clones = 64;
  bool no_clone_prefix = false;
  std::string backend;  // --backend; empty: $FLURRY_BACKEND, else auto
  int cpus = 0;         // --cpus: lanes for the guest's threads (0: the host's CPUs)
  bool verbose = false;
  std::string cluster;                    // --cluster FILE: clones go to the cluster's hosts
  std::string cluster_member = "client";  // --cluster-member: the credentials presented
  bool clone_stats = false;               // --clone-stats: remote clones report their memory
  uint32_t clone_prefetch = 0;            // --clone-prefetch: remote clones' fault window
  std::string clone_avoid = "all";        // --clone-avoid: remote clones' avoidance heuristics
  std::string clone_multicast = "on";     // --clone-multicast: pages pushed to every clone
  std::string program;
};

// Adds --backend and --cpus to a subcommand.
void AddBackendOption(CLI::App* command, std::string& backend, int& cpus);
// The backend --backend (or $FLURRY_BACKEND) asks for; prints the error and returns nullopt
// when the name is unknown.
std::optional<BackendKind> BackendOption(const std::string& flag);

// Declares the `run` subcommand's options on `app`.
CLI::App* AddRunCommand(CLI::App& app, RunOptions& options);

// Runs the program; returns the process exit status for flurry.
int RunCommand(const RunOptions& options, const std::vector<std::string>& guest_args);

// Process-wide setup every VMM process needs before it creates a Vm: the SIGUSR1 kick handler
// (no SA_RESTART) and SIGPIPE ignored (a guest writing to a closed pipe gets EPIPE).
void PrepareVmmProcess();

// Parses a --timeout value: on error prints "flurry: --timeout: ..." and returns nullopt.
// An empty text is no timeout (0 ms).
std::optional<std::chrono::milliseconds> ParseTimeoutOption(const std::string& text);

struct RunVmOptions {
  std::chrono::milliseconds timeout{0};  // 0: none
  std::string timeout_text;              // as the user gave it, for the message
  std::string api_socket;                // empty: no API server
};

// Runs `vm` on this thread (which becomes its vCPU thread) until the guest ends: starts the
// watchdog (timeout) and the API server (api_socket) first and stops both once Run() returns.
// Prints flurry's diagnostics on stderr ("flurry: ..."), and returns flurry's exit status: the
// guest's own, 128+N for a fatal signal N, 124 on timeout, 1 when the VM or the API socket
// cannot be run.
int RunVm(Vm& vm, const RunVmOptions& options);

// Prints "flurry: <message>" on stderr.
void Complain(const std::string& message);

}  // namespace flurry
