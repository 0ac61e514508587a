#include "daemon/daemon_service.h"

#include <arpa/inet.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <set>
#include <system_error>
#include <thread>
#include <vector>

#include "flurry/sf_abi.h"
#include "memory/avoidance.h"

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

// The request's avoidance heuristics: "" is all of them, else ParseAvoidance's syntax.
Result<Avoidance> RequestAvoidance(const v1::RunClonesRequest& request) {
  if (request.avoid().empty()) return Avoidance{};
  return ParseAvoidance(request.avoid());
}

}  // namespace

DaemonService::DaemonService(DaemonConfig config)
    : config_(std::move(config)),
      warm_(CloneVmmSpec{config_.flurry_binary, config_.backend}, config_.warm_vmms,
            config_.state_dir.empty() ? "" : config_.state_dir + "/clones") {}

grpc::Status DaemonService::GetStatus(grpc::ServerContext*, const v1::StatusRequest*,
                                      v1::HostStatus* reply) {
  reply->set_name(config_.name);
  reply->set_slots(config_.slots);
  reply->set_running_clones(running_.load());
  reply->set_memory_bytes(OfferedMemory());
  reply->set_free_memory_bytes(MemInfoBytes("MemAvailable"));
  reply->set_version("1");
  return grpc::Status::OK;
}

int32_t DaemonService::TakeSlots(int32_t wanted) {
  int32_t running = running_.load();
  int32_t take = 0;
  do {
    take = std::min(wanted, config_.slots - running);
    if (take <= 0) return 0;
  } while (!running_.compare_exchange_weak(running, running + take));
  return take;
}

grpc::Status DaemonService::RunClones(grpc::ServerContext* context,
                                      const v1::RunClonesRequest* request,
                                      grpc::ServerWriter<v1::CloneEvent>* writer) {
  // Everything in the request comes from a peer: check it before it reaches a command line.
  const auto& ids = request->clone_ids();
  if (ids.empty() || ids.size() > 4096) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "clone_ids must hold 1..4096 IDs");
  }
  std::set<int32_t> distinct;
  for (int32_t id : ids) {
    if (id <= 0 || !distinct.insert(id).second) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                          "clone IDs must be positive and distinct");
    }
  }
  if (!IsIpv4Port(request->page_server())) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "page_server must be IPv4:PORT");
  }
  const std::string& key = request->page_server_key();
  if (key.size() != 32 || key.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "page_server_key must be 32 hex digits");
  }
  if (request->prefetch_pages() > 64) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "prefetch_pages must be 0..64");
  }
  if (auto avoid = RequestAvoidance(*request); !avoid) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "avoid " + avoid.error().message());
  }
  if (request->ram_bytes() % (2 << 20) != 0 || request->ram_bytes() > (64ULL << 30)) {
    return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT,
                        "ram_bytes must be a multiple of 2 MiB, at most 64 GiB");
  }
  if (shutting_down_.load()) {
    return grpc::Status(grpc::StatusCode::UNAVAILABLE, "flurryd is shutting down");
  }
  // The next VMMs made ahead get this much memory (the ones taken now may have another size:
  // their clones make their own). Not more than this host offers: each waiting VMM's memory
  // slot holds kernel memory (its reverse maps, 2 MiB per GiB) whatever the guest uses.
  if (request->ram_bytes() != 0 && request->ram_bytes() <= OfferedMemory()) {
    warm_.ExpectRam(request->ram_bytes());
  }
  // As many clones as there are free slots; the rest are LOST at once (the parent's sf_join
  // says so) rather than queued behind clones that may run for hours.
  const int32_t taken = TakeSlots(ids.size());
  if (taken == 0) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED,
                        fmt::format("{}: all {} slots are taken", config_.name, config_.slots));
  }
  // Each clone's thread gives its slot back when its clone has ended; slots of clones whose
  // thread never started are given back here.
  std::atomic<int32_t> unreleased{taken};
  struct SlotRelease {
    std::atomic<int32_t>& running;
    std::atomic<int32_t>& unreleased;
    ~SlotRelease() { running.fetch_sub(unreleased.load()); }
  } slots{running_, unreleased};

  std::mutex write_mutex;
  std::atomic<bool> call_gone{false};
  auto send = [&](const v1::CloneEvent& event) {
    std::lock_guard lock(write_mutex);
    if (call_gone.load()) return false;
    if (!writer->Write(event)) call_gone.store(true);
    return !call_gone.load();
  };
  auto call_alive = [&] { return !call_gone.load() && !context->IsCancelled(); };
  for (int i = taken; i < ids.size(); ++i) {
    v1::CloneEvent lost;
    lost.set_clone_id(ids[i]);
    lost.mutable_outcome()->set_kind(SF_OUTCOME_LOST);
    lost.mutable_outcome()->set_diagnostic(
        fmt::format("{}: no free slot (all {} taken)", config_.name, config_.slots));
    send(lost);
  }
  // The call's clones share one cache of the parent's files (each crosses the network once),
  // removed when they have all ended.
  const std::string file_cache = fmt::format("{}/clones/files-{:x}-{}", config_.state_dir,
                                             request->family_id(), next_run_.fetch_add(1));
  std::error_code cache_error;
  std::filesystem::create_directories(file_cache, cache_error);
  struct CacheRemoval {
    std::string path;
    ~CacheRemoval() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  } cache_removal{file_cache};
  const std::string shared_cache = cache_error ? "" : file_cache;  // none: each fetches its own
  std::vector<std::thread> threads;
  try {
    threads.reserve(static_cast<size_t>(taken));
    for (int i = 0; i < taken; ++i) {
      threads.emplace_back(
          [this, request, id = ids[i], &send, &call_alive, &unreleased, &shared_cache] {
            pthread_setname_np(pthread_self(), "flurryd-clone");
            RunOne(*request, id, shared_cache, send, call_alive);
            unreleased.fetch_sub(1);
            running_.fetch_sub(1);
          });
    }
  } catch (const std::exception&) {
    call_gone.store(true);  // out of threads: end the ones started, the call fails
  }
  for (auto& thread : threads) thread.join();
  if (static_cast<int32_t>(threads.size()) < taken) {
    return grpc::Status(grpc::StatusCode::RESOURCE_EXHAUSTED, "cannot start threads");
  }
  return grpc::Status::OK;
}

void DaemonService::RunOne(const v1::RunClonesRequest& request, int32_t id,
                           const std::string& file_cache,
                           const std::function<bool(const v1::CloneEvent&)>& send,
                           const std::function<bool()>& call_alive) {
  auto lost = [&](const std::string& why) {
    v1::CloneEvent event;
    event.set_clone_id(id);
    event.mutable_outcome()->set_kind(SF_OUTCOME_LOST);
    event.mutable_outcome()->set_diagnostic(why);
    send(event);
  };
  // A VMM started ahead, if one is ready, with the clone's directory made ahead too.
  std::optional<WaitingVmm> warm = warm_.Take();
  const std::string work_dir = warm && !warm->work_dir.empty()
                                   ? warm->work_dir
                                   : fmt::format("{}/clones/{:x}-{}-{}", config_.state_dir,
                                                 request.family_id(), id, next_run_.fetch_add(1));
  struct WorkDirRemoval {
    std::string path;
    ~WorkDirRemoval() {
      std::error_code ignored;
      std::filesystem::remove_all(path, ignored);
    }
  } removal{work_dir};
  std::error_code error;
  std::filesystem::create_directories(work_dir + "/root", error);  // made ahead: a stat or two
  if (error)
    return lost(fmt::format("{}: creating {}: {}", config_.name, work_dir, error.message()));

  CloneRunSpec spec;
  spec.flurry_binary = config_.flurry_binary;
  spec.page_server = request.page_server();
  spec.page_server_key = request.page_server_key();
  spec.family_id = request.family_id();
  spec.clone_id = id;
  spec.hostname = config_.name;
  spec.work_dir = work_dir;
  spec.root_dir = work_dir + "/root";
  spec.file_cache_dir = file_cache;
  spec.prefetch_pages = request.prefetch_pages();
  spec.avoid = RequestAvoidance(request).value_or(Avoidance{});  // checked by RunClones
  spec.prefix_output = request.prefix_output();
  spec.memory_stats = request.memory_stats();
  spec.backend = config_.backend;
  // The VMM started ahead if it is still there; else one started now.
  auto start = [&]() -> Result<CloneRunner> {
    if (warm) {
      Result<void> begun = warm->runner.Begin(spec);
      if (begun) return std::move(warm->runner);
      std::fprintf(stderr, "flurryd: %s: clone %d: the VMM started ahead: %s; starting another\n",
                   config_.name.c_str(), id, begun.error().message().c_str());
    }
    return CloneRunner::Start(spec);
  };
  Result<CloneRunner> runner = start();
  if (!runner) {
    return lost(
        fmt::format("{}: starting clone {}: {}", config_.name, id, runner.error().message()));
  }
  v1::CloneEvent started;
  started.set_clone_id(id);
  started.mutable_started()->set_host(config_.name);
  started.mutable_started()->set_pid(runner->pid());
  if (!send(started)) return;  // the runner kills the clone

  CloneRunResult result = runner->Wait(
      [&](int stream, std::string_view data) {
        v1::CloneEvent event;
        event.set_clone_id(id);
        event.mutable_output()->set_stream(stream);
        event.mutable_output()->set_data(data.data(), data.size());
        return send(event);
      },
      [&] { return call_alive() && !shutting_down_.load(); });
  v1::CloneEvent last;
  last.set_clone_id(id);
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
  send(last);
}

uint64_t DaemonService::OfferedMemory() const {
  return config_.memory_bytes != 0 ? config_.memory_bytes : MemInfoBytes("MemTotal");
}

void DaemonService::Shutdown() {
  shutting_down_.store(true);
  warm_.Stop();  // the VMMs waiting; running clones end through their calls (and die with it)
}

}  // namespace flurry
