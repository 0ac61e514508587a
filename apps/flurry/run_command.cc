#include "run_command.h"

#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <thread>

#include "base/parse.h"
#include "cluster_run.h"
#include "memory/avoidance.h"
#include "vmm/api_server.h"
#include "vmm/vm.h"

namespace flurry {

void Complain(const std::string& message) { std::fprintf(stderr, "flurry: %s\n", message.c_str()); }

namespace {

// SIGUSR1 only interrupts KVM_RUN and blocking host calls on the vCPU thread.
void InstallKickHandler() {
  struct sigaction action {};
  action.sa_handler = [](int) {};
  sigemptyset(&action.sa_mask);
  action.sa_flags = 0;  // no SA_RESTART: interrupted calls return EINTR
  sigaction(SIGUSR1, &action, nullptr);
}

// Stops the VM when the deadline passes; joins on destruction. Thread "flurry-watchdog".
class Watchdog {
 public:
  Watchdog(Vm& vm, std::chrono::milliseconds timeout) {
    if (timeout.count() == 0) return;
    thread_ = std::thread([this, &vm, timeout] {
      pthread_setname_np(pthread_self(), "flurry-watchdog");
      std::unique_lock lock(mutex_);
      if (!cv_.wait_for(lock, timeout, [this] { return done_; })) {
        fired_ = true;
        vm.RequestStop();
      }
    });
  }
  ~Watchdog() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  bool fired_ = false;
  std::thread thread_;
};

}  // namespace

CLI::App* AddRunCommand(CLI::App& app, RunOptions& options) {
  CLI::App* run = app.add_subcommand("run", "Run a static x86-64 Linux program in a fresh microVM");
  run->add_option("--mem", options.memory, "Guest memory size (e.g. 256M, 2G)")
      ->capture_default_str();
  run->add_option("--dir", options.dir,
                  "Host directory the guest sees as / (read-only; append :rw for read-write)");
  run->add_option("--timeout", options.timeout,
                  "Stop the guest after this long (e.g. 10s, 500ms); exit status 124");
  run->add_option("--api", options.api,
                  "Serve the control API (flurry ctl, docs/protocols/api.md) on this Unix socket");
  run->add_option("--env", options.env, "Guest environment variable KEY=VALUE (repeatable)");
  run->add_option("--max-clones", options.max_clones, "Most clones one sf_request_ticket may grant")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  run->add_flag("--no-clone-prefix", options.no_clone_prefix,
                "Do not prefix clone output lines with [clone N]");
  AddBackendOption(run, options.backend, options.cpus);
  run->add_flag("-v,--verbose", options.verbose, "Say on stderr which backend runs the guest");
  run->add_option("--cluster", options.cluster,
                  "Cluster file (flurry cluster init): sf_clone's clones run on its hosts, "
                  "placed by free slots; the VM itself runs here");
  run->add_option("--cluster-member", options.cluster_member,
                  "With --cluster: whose credentials to present to the hosts' flurryd")
      ->capture_default_str();
  run->add_flag("--clone-stats", options.clone_stats,
                "With --cluster: each remote clone prints its memory-on-demand counters "
                "(pages fetched, zero-filled, never fetched, bytes received) when it ends");
  run->add_option("--clone-prefetch", options.clone_prefetch,
                  "With --cluster: pages a remote clone's fault fetches (1..64; default: "
                  "flurry restore's)")
      ->check(CLI::Range(1, 64));
  run->add_option("--clone-avoid", options.clone_avoid,
                  "With --cluster: the avoidance heuristics remote clones use (flurry restore "
                  "--avoid): all, none, or a comma list of zero, fresh, overwritten")
      ->capture_default_str();
  run->add_option("--clone-multicast", options.clone_multicast,
                  "With --cluster: on: the page server also multicasts each page it sends a "
                  "remote clone to every clone of the VM, which installs it if it still wants "
                  "it; off: each clone fetches every page itself")
      ->capture_default_str()
      ->check(CLI::IsMember({"on", "off"}));
  run->add_option("program", options.program, "Static ELF executable to run")->required();
  run->prefix_command();  // everything after PROGRAM goes to the guest
  run->footer(
      "Exit status: the program's own; 128+N when the guest dies of signal N (a fault);\n"
      "124 on --timeout; 1 when flurry cannot start the VM.");
  return run;
}

void AddBackendOption(CLI::App* command, std::string& backend, int& cpus) {
  command->add_option("--backend", backend,
                      "Execution backend: kvm, seccomp or auto (default: $FLURRY_BACKEND, else "
                      "auto = kvm where /dev/kvm is usable, else seccomp)");
  command
      ->add_option("--cpus", cpus,
                   "CPUs the guest's threads run on in parallel (default: the host's; at most "
                   "16 on the seccomp backend, 8 vCPUs on KVM)")
      ->check(CLI::Range(1, 64));
}

std::optional<BackendKind> BackendOption(const std::string& flag) {
  std::string name = flag;
  if (name.empty()) {
    const char* env = std::getenv("FLURRY_BACKEND");
    if (env != nullptr) name = env;
  }
  auto kind = ParseBackendKind(name);
  if (!kind) {
    Complain(fmt::format("--backend: {}", kind.error().message()));
    return std::nullopt;
  }
  return *kind;
}

int RunCommand(const RunOptions& options, const std::vector<std::string>& guest_args) {
  VmConfig config;
  auto backend = BackendOption(options.backend);
  if (!backend) return 2;
  config.backend = *backend;
  config.cpus = options.cpus;
  config.program = options.program;
  config.argv.push_back(options.program);
  config.argv.insert(config.argv.end(), guest_args.begin(), guest_args.end());
  config.max_clones_per_ticket = options.max_clones;
  config.clone_output_prefix = !options.no_clone_prefix;
  config.envp = {"PATH=/bin:/usr/bin", "HOME=/", "LANG=C.UTF-8"};
  for (const auto& kv : options.env) {
    if (kv.find('=') == std::string::npos) {
      Complain(fmt::format("--env '{}': expected KEY=VALUE", kv));
      return 2;
    }
    config.envp.push_back(kv);
  }
  auto memory = ParseSize(options.memory);
  if (!memory) {
    Complain("--mem: " + memory.error().message());
    return 2;
  }
  config.memory_size = *memory;
  auto timeout = ParseTimeoutOption(options.timeout);
  if (!timeout) return 2;
  config.timeout = *timeout;
  if (!options.dir.empty()) {
    std::string dir = options.dir;
    if (dir.size() > 3 && dir.ends_with(":rw")) {
      config.dir_writable = true;
      dir.resize(dir.size() - 3);
    } else if (dir.size() > 3 && dir.ends_with(":ro")) {
      dir.resize(dir.size() - 3);
    }
    config.dir = dir;
  }

  auto clone_avoid = ParseAvoidance(options.clone_avoid);
  if (!clone_avoid) {
    Complain("--clone-avoid " + clone_avoid.error().message());
    return 2;
  }
  if (!options.cluster.empty()) {
    auto remote = LoadRemoteCloneConfig(
        options.cluster, options.cluster_member, config.clone_output_prefix, options.clone_stats,
        options.clone_prefetch, *clone_avoid, options.clone_multicast == "on", config.memory_size);
    if (!remote) {
      Complain(fmt::format("--cluster: {}", remote.error().message()));
      return 1;
    }
    config.remote_clones = std::move(*remote);
  }

  PrepareVmmProcess();
  auto vm = Vm::Create(config);
  if (!vm) {
    Complain(vm.error().message());
    return 1;
  }
  if (options.verbose) Complain(fmt::format("backend: {}", (*vm)->backend_name()));
  return RunVm(**vm, RunVmOptions{config.timeout, options.timeout, options.api});
}

void PrepareVmmProcess() {
  InstallKickHandler();
  // A guest writing to a closed pipe gets EPIPE from write(2); the VMM must not die of it.
  signal(SIGPIPE, SIG_IGN);
}

std::optional<std::chrono::milliseconds> ParseTimeoutOption(const std::string& text) {
  if (text.empty()) return std::chrono::milliseconds(0);
  auto timeout = ParseDuration(text);
  if (!timeout) {
    Complain("--timeout: " + timeout.error().message());
    return std::nullopt;
  }
  if (timeout->count() <= 0) {
    Complain("--timeout must be positive");
    return std::nullopt;
  }
  return *timeout;
}

int RunVm(Vm& vm, const RunVmOptions& options) {
  // Owned here, on the vCPU thread; stopped (its thread joined) before `vm` can go away.
  std::unique_ptr<ApiServer> api;
  if (!options.api_socket.empty()) {
    auto server = ApiServer::Start(
        options.api_socket, [&vm](const ControlRequest& request) { return vm.Control(request); });
    if (!server) {
      Complain("--api: " + server.error().message());
      return 1;
    }
    api = std::move(*server);
  }
  Result<GuestExit> exit;
  {
    Watchdog watchdog(vm, options.timeout);
    exit = vm.Run();
  }
  // Run() has answered every pending control request; the API thread can finish.
  if (api) api->Stop();
  if (!exit) {
    Complain("running the guest: " + exit.error().message());
    return 1;
  }
  if (exit->kind == GuestExit::Kind::kTimedOut) {
    Complain(fmt::format("guest timed out after {}; stopped", options.timeout_text));
  } else if (!exit->diagnostic.empty()) {
    Complain(exit->diagnostic);
  }
  return exit->ExitCode();
}

}  // namespace flurry
