#include "daemon/daemon_service.h"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "flurry/sf_abi.h"

namespace flurry {
namespace {

namespace v1 = flurry::daemon::v1;

// "NAME: <value> kB" from /proc/meminfo, in bytes (0 when missing).
uint64_t MemInfoBytes(const std::string& name) {
  std::ifstream in("/proc/meminfo");
  std::string key;
  uint64_t value = 0;
  std::string unit;
  while (in >> key >> value) {
    std::getline(in, unit);
    if (key == name + ":") return value * 1024;
  }
  return 0;
}

// A dotted IPv4 address and a port 1..65535.
bool IsIpv4Port(const std::string& text) {
  const size_t colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 >= text.size() || text.size() - colon > 6) {
    return false;
  }
  in_addr address{};
  if (inet_pton(AF_INET, text.substr(0, colon).c_str(), &address) != 1) return false;
  const std::string port = text.substr(colon + 1);
  if (port.find_first_not_of("0123456789") != std::string::npos) return false;
  const int value = std::stoi(port);
  return value > 0 && value < 65536;
}

}  // namespace

DaemonService::DaemonService(DaemonConfig config) : config_(std::move(config)) {}

grpc::Status DaemonService::GetStatus(grpc::ServerContext*, const v1::StatusRequest*,
                                      v1::HostStatus* reply) {
  reply->set_name(config_.name);
  reply->set_slots(config_.slots);
  reply->set_running_clones(running_.load());
  reply->set_memory_bytes(config_.memory_bytes != 0 ? config_.memory_bytes
                                                    : MemInfoBytes("MemTotal"));
  reply->set_free_memory_bytes(MemInfoBytes("MemAvailable"));
  reply->set_version("1");
  return grpc::Status::OK;
}

grpc::Status DaemonService::RunClone(grpc::ServerContext* context,
                                     const v1::RunCloneRequest* request,
                                     grpc::ServerWriter<v1::CloneEvent>* writer) {
  // Everything in the request comes from a peer: check it before it reaches a command line.
  if (request->clone_id() <= 0) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "clone_id must be positive");
  }
  if (!IsIpv4Port(request->page_server())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "page_server must be IPv4:PORT");
  }
  if (request->prefetch_pages() > 64) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prefetch_pages must be 0..64");
  }
  if (shutting_down_.load()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "flurryd is shutting down");
  }
  // A slot, or a refusal (the parent reports the clone LOST).
  int32_t running = running_.load();
  do {
    if (running >= config_.slots) {
      return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                          fmt::format("{}: all {} slots are taken", config_.name, config_.slots));
    }
  } while (!running_.compare_exchange_weak(running, running + 1));
  struct SlotRelease {
    std::atomic<int32_t>& running;
    ~SlotRelease() { running.fetch_sub(1); }
  } slot{running_};

  const std::string work_dir =
      fmt::format("{}/clones/{:x}-{}-{}", config_.state_dir, request->family_id(),
                  request->clone_id(), next_run_.fetch_add(1));
  std::error_code error;
  std::filesystem::create_directories(work_dir, error);
  if (error) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        fmt::format("creating {}: {}", work_dir, error.message()));
  }
  struct WorkDirRemoval {
    std::string path;
    ~WorkDirRemoval() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  } removal{work_dir};

  CloneRunSpec spec;
  spec.flurry_binary = config_.flurry_binary;
  spec.page_server = request->page_server();
  spec.family_id = request->family_id();
  spec.clone_id = request->clone_id();
  spec.hostname = config_.name;
  spec.work_dir = work_dir;
  spec.prefetch_pages = request->prefetch_pages();
  spec.prefix_output = request->prefix_output();
  spec.backend = config_.backend;
  auto runner = CloneRunner::Start(spec);
  if (!runner) {
    return grpc::Status(grpc::StatusCode::INTERNAL,
                        fmt::format("{}: starting clone {}: {}", config_.name, spec.clone_id,
                                    runner.error().message()));
  }
  v1::CloneEvent started;
  started.mutable_started()->set_host(config_.name);
  started.mutable_started()->set_pid(runner->pid());
  if (!writer->Write(started)) return grpc::Status::CANCELLED;  // the runner kills the clone

  CloneRunResult result = runner->Wait(
      [writer](int stream, std::string_view data) {
        v1::CloneEvent event;
        event.mutable_output()->set_stream(stream);
        event.mutable_output()->set_data(data.data(), data.size());
        return writer->Write(event);
      },
      [this, context] { return !context->IsCancelled() && !shutting_down_.load(); });
  v1::CloneEvent last;
  v1::Outcome* outcome = last.mutable_outcome();
  outcome->set_kind(result.outcome.kind);
  outcome->set_status(result.outcome.status);
  outcome->set_signal(result.outcome.signal);
  outcome->set_result(result.outcome.result.data(), result.outcome.result.size());
  if (shutting_down_.load() && result.outcome.kind == SF_OUTCOME_LOST) {
    outcome->set_diagnostic(config_.name + ": flurryd was stopped");
  } else {
    outcome->set_diagnostic(result.diagnostic);
  }
  writer->Write(last);
  return grpc::Status::OK;
}

void DaemonService::Shutdown() { shutting_down_.store(true); }

}  // namespace flurry
