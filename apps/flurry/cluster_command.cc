#include "cluster_command.h"

#include <unistd.h>

#include <cerrno>
#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <set>

#include "cluster/cluster_file.h"
#include "cluster/credentials.h"

namespace flurry {
namespace {

namespace fs = std::filesystem;

constexpr int kFailure = 1;
constexpr int kUsageError = 2;

int Complain(const char* command, int status, const std::string& message) {
  std::fprintf(stderr, "flurry: cluster %s: %s\n", command, message.c_str());
  return status;
}

// "NAME=IP:PORT[:SLOTS]"; the address and slots are validated with the whole cluster file.
Result<ClusterHost> ParseHostSpec(const std::string& spec) {
  auto malformed = [&] { return Fail("--host '{}': expected NAME=IP:PORT[:SLOTS]", spec); };
  const size_t equals = spec.find('=');
  if (equals == std::string::npos || equals == 0) return malformed();
  ClusterHost host;
  host.name = spec.substr(0, equals);
  host.address = spec.substr(equals + 1);
  const size_t first_colon = host.address.find(':');
  const size_t last_colon = host.address.rfind(':');
  if (first_colon == std::string::npos) return malformed();
  if (last_colon != first_colon) {
    const std::string slots = host.address.substr(last_colon + 1);
    auto [end, ec] = std::from_chars(slots.data(), slots.data() + slots.size(), host.slots);
    if (slots.empty() || ec != std::errc() || end != slots.data() + slots.size()) {
      return Fail("--host '{}': slots '{}' is not a number", spec, slots);
    }
    host.address.resize(last_colon);
  }
  return host;
}

// The cluster file and the member list, checked before anything is written.
Result<std::pair<ClusterFile, std::vector<std::string>>> Plan(const ClusterOptions& options,
                                                              const std::string& dir) {
  ClusterFile file;
  file.name = options.name;
  file.credentials_dir = "creds";
  for (const std::string& spec : options.hosts)
    file.hosts.push_back(FLURRY_TRY(ParseHostSpec(spec)));
  FLURRY_TRY(ParseClusterFile(FormatClusterFile(file), dir));

  std::vector<std::string> members;
  std::set<std::string> seen;
  for (const ClusterHost& host : file.hosts) {
    members.push_back(host.name);
    seen.insert(host.name);
  }
  const std::vector<std::string> extra =
      options.members.empty() ? std::vector<std::string>{"client"} : options.members;
  for (const std::string& member : extra) {
    FLURRY_TRY_CTX(ValidateMemberName(member), fmt::format("--member '{}'", member));
    if (!seen.insert(member).second) {
      return Fail("--member '{}': a host or another member has that name", member);
    }
    members.push_back(member);
  }
  return std::pair{std::move(file), std::move(members)};
}

std::string FormatMemory(uint64_t bytes) {
  if (bytes == 0) return "-";
  if (bytes % (1ULL << 30) == 0) return fmt::format("{}G", bytes >> 30);
  if (bytes % (1ULL << 20) == 0) return fmt::format("{}M", bytes >> 20);
  return fmt::format("{}", bytes);
}

}  // namespace

ClusterCommands AddClusterCommand(CLI::App& app, ClusterOptions& options) {
  CLI::App* cluster =
      app.add_subcommand("cluster", "Make and inspect multi-host cluster configurations");
  cluster->require_subcommand(1);
  ClusterCommands commands;
  commands.init = cluster->add_subcommand(
      "init", "Write DIR/cluster.json and create the cluster's TLS credentials in DIR/creds");
  commands.init->add_option("dir", options.dir, "Directory for the cluster (created if missing)")
      ->required();
  commands.init->add_option("--name", options.name, "The cluster's name (a DNS label)")->required();
  commands.init
      ->add_option("--host", options.hosts,
                   "A host and its flurryd: NAME=IP:PORT[:SLOTS] (slots default to 8); repeat")
      ->required()
      ->take_all();
  commands.init->add_option(
      "--member", options.members,
      "Also create credentials for this client member; repeat (default: one member 'client')");
  commands.init->footer(
      "The last line of output is the cluster file's path. Exit status: 0 done; 1 the directory "
      "already holds a cluster, or writing failed; 2 usage error (nothing written). Format: "
      "docs/formats/cluster.md.");
  commands.show = cluster->add_subcommand("show", "Validate a cluster file and print its hosts");
  commands.show->add_option("file", options.file, "Cluster file (cluster.json)")->required();
  commands.show->footer("Exit status: 0 when the file is valid; 1 when it is refused.");
  commands.status = cluster->add_subcommand(
      "status", "Ask every host's flurryd how it is: slots, running clones, memory");
  commands.status->add_option("file", options.file, "Cluster file (cluster.json)")->required();
  commands.status->add_option("--member", options.member, "Whose credentials to present")
      ->capture_default_str();
  commands.status->footer("Exit status: 0 when every host answered; 1 otherwise.");
  return commands;
}

int RunClusterInit(const ClusterOptions& options) {
  std::error_code ec;
  const fs::path dir = fs::absolute(options.dir, ec).lexically_normal();
  if (ec) return Complain("init", kUsageError, fmt::format("{}: {}", options.dir, ec.message()));
  auto plan = Plan(options, dir.string());
  if (!plan) return Complain("init", kUsageError, plan.error().message());
  auto& [file, members] = *plan;

  const fs::path cluster_file = dir / "cluster.json";
  const bool exists = fs::exists(cluster_file, ec);
  if (ec) return Complain("init", kFailure, fmt::format("{}: {}", dir.string(), ec.message()));
  if (exists) {
    return Complain(
        "init", kFailure,
        fmt::format("{} exists already: refusing to replace it", cluster_file.string()));
  }
  fs::create_directories(dir, ec);
  if (ec) return Complain("init", kFailure, fmt::format("{}: {}", dir.string(), ec.message()));
  const std::string credentials = (dir / file.credentials_dir).string();
  if (auto created = CreateClusterCredentials(credentials, file.name, members); !created) {
    return Complain("init", kFailure, created.error().message());
  }
  if (auto written = WriteClusterFile(cluster_file.string(), file); !written) {
    return Complain("init", kFailure, written.error().message());
  }
  std::string member_list;
  for (const std::string& member : members) {
    member_list += (member_list.empty() ? "" : ", ") + member;
  }
  std::printf("cluster %s: %zu host%s; credentials in %s for %s\n%s\n", file.name.c_str(),
              file.hosts.size(), file.hosts.size() == 1 ? "" : "s", credentials.c_str(),
              member_list.c_str(), cluster_file.c_str());
  return 0;
}

int RunClusterStatus(const ClusterOptions& options) {
  std::string remote;
  if (const char* env = std::getenv("FLURRY_REMOTE"); env != nullptr && *env != '\0') {
    remote = env;
  } else {
    std::error_code ec;
    const fs::path self = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return Complain("status", kFailure, "finding this executable: " + ec.message());
    remote = (self.parent_path() / "flurry-remote").string();
  }
  std::vector<std::string> args = {remote,       "status",   "--cluster",
                                   options.file, "--member", options.member};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  execv(argv[0], argv.data());
  return Complain("status", kFailure, fmt::format("{}: {}", remote, std::strerror(errno)));
}

int RunClusterShow(const ClusterOptions& options) {
  auto file = LoadClusterFile(options.file);
  if (!file) return Complain("show", kFailure, file.error().message());
  size_t name_width = 4;     // "NAME"
  size_t address_width = 7;  // "ADDRESS"
  for (const ClusterHost& host : file->hosts) {
    name_width = std::max(name_width, host.name.size());
    address_width = std::max(address_width, host.address.size());
  }
  std::string text =
      fmt::format("cluster {} (credentials {})\n", file->name, file->credentials_dir);
  text += fmt::format("{:<{}}  {:<{}}  {:>5}  {}\n", "NAME", name_width, "ADDRESS", address_width,
                      "SLOTS", "MEMORY");
  for (const ClusterHost& host : file->hosts) {
    text += fmt::format("{:<{}}  {:<{}}  {:>5}  {}\n", host.name, name_width, host.address,
                        address_width, host.slots, FormatMemory(host.memory_bytes));
  }
  std::fwrite(text.data(), 1, text.size(), stdout);
  return 0;
}

}  // namespace flurry
