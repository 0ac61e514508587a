// flurryd: the per-host daemon of a flurry cluster. It runs clones of VMs that live on other
// hosts (each a `flurry restore --as-clone` of the parent's page server), streams their output
// and outcomes back and reports its free slots (docs/protocols/flurryd.md). Only members of the
// cluster can call it: gRPC over mutual TLS with the cluster's CA (flurry cluster init).
//
// SIGTERM/SIGINT: its clones are ended and reported LOST to their parents, the state dir is
// emptied of what it made, and it exits 0.
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "base/parse.h"
#include "cluster/cluster_file.h"
#include "cluster/credentials.h"
#include "daemon/daemon_service.h"
#include "daemon/tls.h"

namespace {

int Complain(const std::string& message) {
  std::fprintf(stderr, "flurryd: %s\n", message.c_str());
  return 1;
}

std::string ProgramDirectory() {
  std::error_code error;
  auto self = std::filesystem::read_symlink("/proc/self/exe", error);
  return error ? std::string(".") : self.parent_path().string();
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"flurryd: runs clones of flurry VMs from other hosts on this host"};
  std::string cluster_path, name, state_dir, listen, memory, backend, flurry_binary;
  std::optional<int32_t> slots, warm;
  app.add_option("--cluster", cluster_path, "The cluster file (flurry cluster init)")->required();
  app.add_option("--name", name, "This host's name in the cluster file")->required();
  app.add_option("--state-dir", state_dir, "Where clones' working directories live")->required();
  app.add_option("--listen", listen, "IP:PORT to listen on (default: the cluster file's)");
  app.add_option("--slots", slots, "Clones run at once (default: the cluster file's)")
      ->check(CLI::Range(1, 4096));
  app.add_option("--mem", memory, "Memory offered to clones, e.g. 8G (default: MemTotal)");
  app.add_option("--backend", backend, "Backend for clones: kvm or seccomp (default: auto)")
      ->check(CLI::IsMember({"kvm", "seccomp"}));
  app.add_option("--flurry", flurry_binary, "The flurry executable (default: beside flurryd)");
  app.add_option("--warm", warm,
                 "Clone VMMs kept started ahead of their clones, their VMs made (default: as "
                 "many as slots; 0: none)")
      ->check(CLI::Range(0, 4096));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return e.get_exit_code() == 0 ? 0 : 2;
  }

  // Signals are taken by sigwait on this thread; every thread gRPC starts inherits the mask.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGTERM);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr);
  signal(SIGPIPE, SIG_IGN);

  auto cluster = flurry::LoadClusterFile(cluster_path);
  if (!cluster) return Complain(cluster.error().message());
  const flurry::ClusterHost* host = cluster->Find(name);
  if (host == nullptr) return Complain(fmt::format("{}: no host named {}", cluster_path, name));
  auto credentials = flurry::LoadMemberCredentials(cluster->credentials_dir, name);
  if (!credentials) return Complain(credentials.error().message());

  flurry::DaemonConfig config;
  config.name = name;
  config.slots = slots.value_or(host->slots);
  config.warm_vmms = warm.value_or(config.slots);
  config.memory_bytes = host->memory_bytes;
  if (!memory.empty()) {
    auto bytes = flurry::ParseSize(memory);
    if (!bytes) return Complain("--mem: " + bytes.error().message());
    config.memory_bytes = *bytes;
  }
  config.backend = backend;
  config.flurry_binary = flurry_binary.empty() ? ProgramDirectory() + "/flurry" : flurry_binary;
  if (access(config.flurry_binary.c_str(), X_OK) != 0) {
    return Complain(fmt::format("{}: not an executable (--flurry)", config.flurry_binary));
  }

  // The state dir: one daemon at a time, and nothing of a previous run left in it.
  std::error_code error;
  std::filesystem::create_directories(state_dir, error);
  if (error) return Complain(fmt::format("{}: {}", state_dir, error.message()));
  config.state_dir = std::filesystem::canonical(state_dir, error).string();
  const std::string lock_path = config.state_dir + "/flurryd.lock";
  const int lock = open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (lock < 0 || flock(lock, LOCK_EX | LOCK_NB) != 0) {
    return Complain(fmt::format("{}: another flurryd uses this state dir", config.state_dir));
  }
  const std::string clones_dir = config.state_dir + "/clones";
  std::filesystem::remove_all(clones_dir, error);
  std::filesystem::create_directories(clones_dir, error);
  if (error) return Complain(fmt::format("{}: {}", clones_dir, error.message()));

  const std::string address = listen.empty() ? host->address : listen;
  flurry::DaemonService service(config);
  grpc::ServerBuilder builder;
  builder.AddListeningPort(address,
                           flurry::DaemonCredentials(
                               {credentials->ca_pem, credentials->cert_pem, credentials->key_pem}));
  builder.RegisterService(&service);
  // Notice a caller that vanished (its host died) within seconds: its clone then ends.
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIME_MS, 1000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, 2000);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server) return Complain(fmt::format("cannot listen on {}", address));
  std::printf("flurryd: %s listening on %s (%d slots)\n", name.c_str(), address.c_str(),
              config.slots);
  std::fflush(stdout);

  int signal_number = 0;
  sigwait(&stop_signals, &signal_number);
  std::fprintf(stderr, "flurryd: %s: %s: ending %d clone(s)\n", name.c_str(),
               sigabbrev_np(signal_number), service.running());
  service.Shutdown();  // clones are killed within 100 ms; their calls end with LOST
  server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(5));
  server->Wait();
  std::filesystem::remove_all(clones_dir, error);
  unlink(lock_path.c_str());
  close(lock);
  return 0;
}
