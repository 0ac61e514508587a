// flurry-remote: the local stand-in of the clones one sf_clone puts on other hosts
// (fork/remote_clones.h). The parent VMM starts one per ticket, with a --host and --count for
// each host the ticket's clones go to. For each host (a thread each) it asks the host's flurryd
// to run the clones (RunClones), writes their output to its own stdout/stderr (the VM's) and
// each clone's outcome to that clone's outcome channel (host k's descriptors follow host k-1's
// from fd 3 on: its control pipe, then a channel per clone; docs/protocols/clone_channel.md).
// It ends with its clones; killing it cancels the calls, and the daemons kill them. A clone
// that is lost (its host died, the daemon refused it) gets no outcome: the parent sees LOST.
#include <fcntl.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <mutex>
#include <optional>
#include <sstream>
#include <system_error>
#include <thread>
#include <vector>

#include "base/spawn.h"
#include "cluster/cluster_file.h"
#include "cluster/credentials.h"
#include "daemon/tls.h"
#include "flurryd.grpc.pb.h"
#include "fork/outcome_channel.h"
#include "fork/standin_job.h"
#include "memory/avoidance.h"

namespace v1 = flurry::daemon::v1;

namespace {

constexpr int kControlFd = 3;

void WriteAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;  // the VM's output is gone: nothing else to do with it
    done += static_cast<size_t>(n);
  }
}

// The cluster as this member sees it, loaded once for every host; a spare stand-in also has
// a channel to each host made (and connecting) while it waits for its job.
struct Cluster {
  flurry::ClusterFile file;
  flurry::TlsIdentity identity;
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels;
};
struct Common {
  uint64_t family = 0;
  std::shared_ptr<const Cluster> cluster;
};

flurry::Result<std::shared_ptr<const Cluster>> LoadCluster(const std::string& path,
                                                           const std::string& member) {
  auto cluster = std::make_shared<Cluster>();
  cluster->file = FLURRY_TRY(flurry::LoadClusterFile(path));
  const auto credentials =
      FLURRY_TRY(flurry::LoadMemberCredentials(cluster->file.credentials_dir, member));
  cluster->identity = {credentials.ca_pem, credentials.cert_pem, credentials.key_pem};
  return cluster;
}

// The channel to `host`: the cluster's (a spare's, made while it waited), unless it has none or
// the one it has is failing (the host was down or restarted while the spare waited: a call
// there would fail at once, in its reconnect backoff), else a new one.
std::shared_ptr<grpc::Channel> ChannelTo(const Cluster& cluster, const flurry::ClusterHost& host) {
  const auto made = cluster.channels.find(host.name);
  if (made != cluster.channels.end() &&
      made->second->GetState(/*try_to_connect=*/false) != GRPC_CHANNEL_TRANSIENT_FAILURE) {
    return made->second;
  }
  return flurry::DaemonChannel(cluster.identity, host.address, host.name);
}

// One host's GetStatus answer, or why there is none.
struct HostAnswer {
  grpc::Status status;
  v1::HostStatus reply;
};

// GetStatus on every host at once (a thread each), each call ending by `deadline`, on the
// cluster's channel to the host where it has a working one (ChannelTo).
std::vector<HostAnswer> AskEveryHost(const Cluster& cluster, std::chrono::milliseconds deadline) {
  std::vector<HostAnswer> answers(cluster.file.hosts.size());
  const auto until = std::chrono::system_clock::now() + deadline;
  std::vector<std::thread> threads;
  threads.reserve(cluster.file.hosts.size());
  for (size_t i = 0; i < cluster.file.hosts.size(); ++i) {
    auto ask = [&, i] {
      const flurry::ClusterHost& host = cluster.file.hosts[i];
      auto stub = v1::Flurryd::NewStub(ChannelTo(cluster, host));
      grpc::ClientContext context;
      context.set_deadline(until);
      answers[i].status = stub->GetStatus(&context, v1::StatusRequest{}, &answers[i].reply);
    };
    try {
      threads.emplace_back(ask);
    } catch (const std::system_error&) {
      ask();  // out of threads: ask this one here
    }
  }
  for (std::thread& thread : threads) thread.join();
  return answers;
}

// `flurry-remote status --cluster FILE [--member M] [--machine] [--deadline-ms N]` (what
// `flurry cluster status` runs, and the cluster allocator with --machine): every host's
// GetStatus, as a table, or as lines for a program (fork/remote_status.h):
//   host NAME up SLOTS RUNNING_CLONES MEMORY_BYTES FREE_MEMORY_BYTES
//   host NAME down WHY...
// written to `out`. `preloaded`: a spare's cluster, used when the command names the same
// cluster file and member (the spare answers the allocator's queries: SpareStatusSource).
int Status(int argc, char** argv, int out, const std::shared_ptr<const Cluster>& preloaded,
           const std::string& preloaded_path, const std::string& preloaded_member) {
  CLI::App app{"flurry-remote status: ask every host's flurryd how it is"};
  std::string cluster_path, member = "client";
  bool machine = false;
  int deadline_ms = 3000;
  app.add_option("--cluster", cluster_path)->required();
  app.add_option("--member", member);
  app.add_flag("--machine", machine);
  app.add_option("--deadline-ms", deadline_ms)->check(CLI::Range(1, 600000));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  std::shared_ptr<const Cluster> cluster = preloaded;
  if (!preloaded || cluster_path != preloaded_path || member != preloaded_member) {
    auto loaded = LoadCluster(cluster_path, member);
    if (!loaded) {
      std::fprintf(stderr, "flurry: cluster status: %s\n", loaded.error().message().c_str());
      return 1;
    }
    cluster = std::move(*loaded);
  }
  const std::vector<HostAnswer> answers =
      AskEveryHost(*cluster, std::chrono::milliseconds(deadline_ms));
  int failed = 0;
  std::string text;
  if (!machine) {
    text += fmt::format("{:<12} {:<22} {:>6} {:>8} {:>12} {:>12}  {}\n", "NAME", "ADDRESS", "SLOTS",
                        "RUNNING", "MEMORY_MIB", "FREE_MIB", "STATE");
  }
  for (size_t i = 0; i < answers.size(); ++i) {
    const flurry::ClusterHost& host = cluster->file.hosts[i];
    const v1::HostStatus& reply = answers[i].reply;
    std::string why;
    if (!answers[i].status.ok()) {
      why = answers[i].status.error_message();
    } else if (reply.name() != host.name) {
      why = "it answers as " + reply.name();
    }
    if (!answers[i].status.ok()) ++failed;
    if (machine) {
      // One line per host: nothing the daemon sent may break a line or a word.
      for (char& c : why) {
        if (c == '\n' || c == '\r') c = ' ';
      }
      if (why.empty()) {
        text +=
            fmt::format("host {} up {} {} {} {}\n", host.name, reply.slots(),
                        reply.running_clones(), reply.memory_bytes(), reply.free_memory_bytes());
      } else {
        text += fmt::format("host {} down {}\n", host.name, why);
      }
      continue;
    }
    if (!answers[i].status.ok()) {
      text += fmt::format("{:<12} {:<22} {:>6} {:>8} {:>12} {:>12}  unreachable: {}\n", host.name,
                          host.address, "-", "-", "-", "-", why);
      continue;
    }
    text += fmt::format("{:<12} {:<22} {:>6} {:>8} {:>12} {:>12}  {}\n", reply.name(), host.address,
                        reply.slots(), reply.running_clones(), reply.memory_bytes() >> 20,
                        reply.free_memory_bytes() >> 20,
                        reply.name() == host.name ? "up" : "up, but answers as another host");
  }
  WriteAll(out, text);
  return failed == 0 ? 0 : 1;
}

// One host's share of the clones, and what every host's thread reads.
struct HostJob {
  std::string host_name;
  int32_t count = 0;
  int control_fd = -1;
  std::vector<int> channel_fds;  // one outcome channel per clone
};
struct Settings {
  std::string cluster_path, member = "client", family_text;
  pid_t parent_pid = 0;
  bool no_prefix = false, memory_stats = false;
  uint32_t prefetch = 0;
  std::string avoid = "all";
  uint64_t ram_bytes = 0;  // the VM's guest memory (RunClonesRequest.ram_bytes)
};

// `preloaded`: a spare's cluster, used when the job names the same cluster file and member.
flurry::Result<Common> LoadCommon(const Settings& settings,
                                  const std::shared_ptr<const Cluster>& preloaded,
                                  const std::string& preloaded_path,
                                  const std::string& preloaded_member) {
  Common common;
  char* end = nullptr;
  common.family = std::strtoull(settings.family_text.c_str(), &end, 16);
  if (end == nullptr || *end != '\0') return flurry::Fail("--family is not hex");
  if (preloaded && settings.cluster_path == preloaded_path && settings.member == preloaded_member) {
    common.cluster = preloaded;
  } else {
    common.cluster = FLURRY_TRY(LoadCluster(settings.cluster_path, settings.member));
  }
  return common;
}

// The clones' output and this program's own lines, whole chunks at a time whatever host
// they come from.
std::mutex output_mutex;

void Tell(const std::string& line) {
  std::lock_guard lock(output_mutex);
  WriteAll(2, line);
}

// Runs one host's clones to their end (the thread of that host). Returns the exit status the
// stand-in would have for it alone.
int RunHost(const HostJob& job, const Settings& settings, const flurry::Result<Common>& loaded) {
  // This host's descriptors, closed when its part ends (however it ends), so that the
  // parent's sf_join sees its clones end (LOST) at once, whatever the other hosts' threads
  // still do. A channel handed to a writer thread is that thread's to close.
  struct Descriptors {
    const HostJob& job;
    std::vector<bool> handed;
    ~Descriptors() {
      close(job.control_fd);
      for (size_t i = 0; i < job.channel_fds.size(); ++i) {
        if (!handed[i]) close(job.channel_fds[i]);
      }
    }
  } descriptors{job, std::vector<bool>(static_cast<size_t>(job.count), false)};
  // Clone ID -> the index of its outcome channel; closed once its outcome is written. Empty
  // until sf_clone names the IDs.
  std::map<int32_t, size_t> channels;
  // Waits for sf_clone's line on the control pipe: "PAGE_SERVER KEY ID1 ... IDN". False at EOF
  // (the ticket released without sf_clone) or on a malformed line.
  std::string page_server, key;
  auto await_clone = [&]() -> bool {
    std::string line;
    char chunk[4096];
    while (line.find('\n') == std::string::npos && line.size() < (1u << 20)) {
      const ssize_t n = read(job.control_fd, chunk, sizeof chunk);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;
      line.append(chunk, static_cast<size_t>(n));
    }
    std::istringstream words(line);
    words >> page_server >> key;
    std::vector<int32_t> ids;
    for (int32_t id; words >> id;) ids.push_back(id);
    if (static_cast<int32_t>(ids.size()) != job.count) return false;
    for (int32_t i = 0; i < job.count; ++i) channels[ids[i]] = static_cast<size_t>(i);
    return true;
  };
  // Before sf_clone, a failure waits for it so that it can name the clones it loses.
  auto lost = [&](const std::string& why) {
    if (channels.empty() && !await_clone()) return 1;
    if (channels.empty()) {
      Tell(fmt::format("flurry: {} clone(s) on {} lost: {}\n", job.count, job.host_name, why));
    }
    for (const auto& [id, fd] : channels) {
      Tell(fmt::format("flurry: clone {} on {} lost: {}\n", id, job.host_name, why));
    }
    return 1;
  };

  if (!loaded) return lost(loaded.error().message());
  const Common& common = *loaded;
  const flurry::ClusterHost* host = common.cluster->file.Find(job.host_name);
  if (host == nullptr) return lost("no such host in " + settings.cluster_path);
  auto channel = ChannelTo(*common.cluster, *host);
  if (!channel->WaitForConnected(std::chrono::system_clock::now() + std::chrono::seconds(4))) {
    return lost(
        fmt::format("its flurryd at {} cannot be reached, or refused this member's credentials",
                    host->address));
  }
  auto stub = v1::Flurryd::NewStub(channel);

  // Connected: now wait for sf_clone, or for the ticket's end.
  if (!await_clone()) return 0;

  v1::RunClonesRequest request;
  request.set_page_server(page_server);
  request.set_page_server_key(key);
  request.set_family_id(common.family);
  for (const auto& [id, fd] : channels) request.add_clone_ids(id);
  request.set_prefetch_pages(settings.prefetch);
  request.set_avoid(settings.avoid);
  request.set_prefix_output(!settings.no_prefix);
  request.set_memory_stats(settings.memory_stats);
  request.set_ram_bytes(settings.ram_bytes);
  grpc::ClientContext context;
  auto reader = stub->RunClones(&context, request);
  v1::CloneEvent event;
  std::vector<std::thread> writers;
  writers.reserve(channels.size());  // no reallocation while threads start
  while (!channels.empty() && reader->Read(&event)) {
    if (event.has_output()) {
      std::lock_guard lock(output_mutex);
      WriteAll(event.output().stream() == 2 ? 2 : 1, event.output().data());
    } else if (event.has_outcome()) {
      auto channel = channels.find(event.clone_id());
      if (channel == channels.end()) continue;  // not ours, or told twice: ignored
      const v1::Outcome& o = event.outcome();
      flurry::CloneOutcome outcome;
      outcome.kind = o.kind();
      outcome.status = o.status();
      outcome.signal = o.signal();
      outcome.result.assign(o.result().begin(), o.result().end());
      if (!o.diagnostic().empty()) {
        Tell(fmt::format("flurry: clone {} on {} lost: {}\n", event.clone_id(), job.host_name,
                         o.diagnostic()));
      }
      // Written by a thread of its own ("flurry-outcome"): the parent's sf_join reads the
      // channels in ID order, so a large result for a later clone must not hold up the
      // outcomes of earlier ones behind a full socket buffer.
      descriptors.handed[channel->second] = true;
      writers.emplace_back([id = event.clone_id(), fd = job.channel_fds[channel->second],
                            outcome = std::move(outcome)] {
        pthread_setname_np(pthread_self(), "flurry-outcome");
        if (auto sent = flurry::SendOutcome(fd, outcome); !sent) {
          Tell(fmt::format("flurry: clone {}: passing its outcome on: {}\n", id,
                           sent.error().message()));
        }
        close(fd);
      });
      channels.erase(channel);
    }
  }
  for (std::thread& writer : writers) writer.join();
  if (channels.empty()) {
    context.TryCancel();  // every outcome is in: nothing more to wait for
    return 0;
  }
  const grpc::Status status = reader->Finish();
  return lost(status.ok() ? std::string("its flurryd sent no outcome")
                          : fmt::format("{} ({})", status.error_message(),
                                        static_cast<int>(status.error_code())));
}

// A stand-in's command line (or a spare's job): the settings and each host's share, its
// descriptors taken in order from `fds` (fd 3, 4, ... for a new process); `all_fds`: the
// shares must need every one of them. Returns 0, or the exit status for a command line that
// is wrong.
int ParseStandIn(int argc, char** argv, const std::vector<int>& fds, bool all_fds,
                 Settings* settings, std::vector<HostJob>* jobs) {
  CLI::App app{"flurry-remote: the local end of clones on other hosts (started by flurry)"};
  std::vector<std::string> hosts;
  std::vector<int32_t> counts;
  app.add_option("--cluster", settings->cluster_path)->required();
  app.add_option("--member", settings->member);
  app.add_option("--host", hosts, "a host (repeated: one --count each, in the same order)")
      ->required();
  app.add_option("--family", settings->family_text)->required();
  app.add_option("--count", counts)->required()->check(CLI::Range(1, 4096));
  app.add_option("--parent-pid", settings->parent_pid)->required();
  app.add_flag("--no-clone-prefix", settings->no_prefix);
  app.add_flag("--memory-stats", settings->memory_stats);
  app.add_option("--prefetch", settings->prefetch)->check(CLI::Range(0, 64));
  app.add_option("--ram-bytes", settings->ram_bytes);
  app.add_option("--avoid", settings->avoid)->check([](const std::string& text) {
    auto parsed = flurry::ParseAvoidance(text);
    return parsed ? std::string() : parsed.error().message();
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  size_t total = 0;
  for (int32_t count : counts) total += static_cast<size_t>(count);
  const size_t needed = total + hosts.size();
  if (hosts.size() != counts.size() || total > 4096 || needed > fds.size() ||
      (all_fds && needed != fds.size())) {
    std::fprintf(stderr,
                 "flurry-remote: one --count per --host, 4096 clones at most, a control pipe "
                 "and a channel per clone (%zu descriptors for %zu)\n",
                 fds.size(), needed);
    return 2;
  }
  size_t next = 0;
  for (size_t k = 0; k < hosts.size(); ++k) {
    HostJob job{hosts[k], counts[k], fds[next++], {}};
    job.channel_fds.assign(fds.begin() + static_cast<ptrdiff_t>(next),
                           fds.begin() + static_cast<ptrdiff_t>(next) + counts[k]);
    next += static_cast<size_t>(counts[k]);
    jobs->push_back(std::move(job));
  }
  return 0;
}

// Runs a stand-in: a thread per host (the first runs here); each connects, waits for its
// sf_clone line and pumps its clones' output and outcomes.
int RunStandIn(const Settings& settings, const std::vector<HostJob>& jobs,
               const flurry::Result<Common>& common) {
  std::vector<int> results(jobs.size(), 0);
  std::vector<std::thread> threads;
  for (size_t k = 1; k < jobs.size(); ++k) {
    auto run = [&, k] {
      pthread_setname_np(pthread_self(), "flurry-host");
      results[k] = RunHost(jobs[k], settings, common);
    };
    try {
      threads.emplace_back(run);
    } catch (const std::system_error&) {
      run();  // out of threads: this host's clones run after the ones before it
    }
  }
  results[0] = RunHost(jobs[0], settings, common);
  for (std::thread& thread : threads) thread.join();
  return *std::max_element(results.begin(), results.end());
}

// What both kinds of stand-in do first: gRPC's own log lines would land on the VM's stderr
// (this program says what went wrong), and it lives as long as the VM that started it.
bool TieToParent(pid_t parent_pid) {
  setenv("GRPC_VERBOSITY", "NONE", 1);
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent_pid) return false;
  signal(SIGPIPE, SIG_IGN);
  return true;
}

// `flurry-remote spare --cluster FILE --member M --parent-pid P`, fd 3 a socket: a stand-in
// started ahead of need (fork/remote_clones.h, SpareStandIn). It loads the cluster and the
// credentials and starts connecting to every host, then waits for its job
// (fork/standin_job.h): a stand-in's command line and descriptors. No job (EOF): it ends.
// Before it, it answers any number of status jobs (the allocator's queries).
int Spare(int argc, char** argv) {
  CLI::App app{"flurry-remote spare: a stand-in waiting for its ticket"};
  std::string cluster_path, member = "client";
  pid_t parent_pid = 0;
  app.add_option("--cluster", cluster_path)->required();
  app.add_option("--member", member);
  app.add_option("--parent-pid", parent_pid)->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return 2;
  }
  if (!TieToParent(parent_pid)) return 1;
  std::shared_ptr<const Cluster> preloaded;
  if (auto loaded = LoadCluster(cluster_path, member); loaded) {
    auto cluster = std::const_pointer_cast<Cluster>(*loaded);
    std::vector<std::shared_ptr<grpc::Channel>> connecting;
    for (const flurry::ClusterHost& host : cluster->file.hosts) {
      auto channel = flurry::DaemonChannel(cluster->identity, host.address, host.name);
      connecting.push_back(channel);
      cluster->channels.emplace(host.name, std::move(channel));
    }
    preloaded = std::move(cluster);
    // Connects (TCP, TLS) while the spare waits: every channel is asked at once, and makes
    // progress while a thread waits on one of them. Detached: a host that does not answer must
    // not hold up the stand-in's end.
    for (const auto& channel : connecting) channel->GetState(/*try_to_connect=*/true);
    try {
      std::thread([connecting = std::move(connecting)] {
        pthread_setname_np(pthread_self(), "flurry-connect");
        const auto until = std::chrono::system_clock::now() + std::chrono::seconds(4);
        for (const auto& channel : connecting) channel->WaitForConnected(until);
      }).detach();
    } catch (const std::system_error&) {
      // no thread: each host's thread connects when the job comes, as a new stand-in's does
    }
  }  // else the job loads it again, and says what is wrong
  // Whether the cluster loaded or not: a job then loads it as a new process would. A VM that
  // has let its spare go makes this fail; the receive below then sees end of file.
  (void)flurry::SendSpareReady(kControlFd);
  flurry::Result<flurry::StandInJob> job;
  for (;;) {
    job = flurry::ReceiveStandInJob(kControlFd);
    if (!job) {
      if (job.error().code() == ECONNRESET) return 0;  // the VM let its spare go
      std::fprintf(stderr, "flurry-remote: %s\n", job.error().message().c_str());
      return 1;
    }
    if (job->args.size() < 2 || job->args[1] != "status") break;
    // The allocator's status query (`flurry-remote status --machine ...`, its stdout the one
    // descriptor): answered on the channels made, and the spare waits on for its ticket.
    if (job->fds.size() != 1) {
      std::fprintf(stderr, "flurry-remote: a status job takes 1 descriptor, not %zu\n",
                   job->fds.size());
      return 2;
    }
    std::vector<char*> status_argv = flurry::ExecArray(job->args);
    Status(static_cast<int>(job->args.size()) - 1, status_argv.data() + 1, job->fds[0].get(),
           preloaded, cluster_path, member);
    job->fds.clear();  // the end of the answer: the VMM reads to end of file
  }
  close(kControlFd);
  // The descriptors keep numbers above stdin, stdout and stderr (as a new stand-in's fd 3, 4,
  // ...): should the VM have run without one of them, a channel must not land there.
  std::vector<int> fds;
  for (flurry::UniqueFd& fd : job->fds) {
    if (fd.get() <= STDERR_FILENO) fd.Reset(fcntl(fd.get(), F_DUPFD_CLOEXEC, kControlFd));
    if (!fd.valid()) {
      std::fprintf(stderr, "flurry-remote: moving a descriptor of the job: %s\n",
                   std::strerror(errno));
      return 1;
    }
  }
  for (flurry::UniqueFd& fd : job->fds) fds.push_back(fd.Release());
  std::vector<char*> job_argv = flurry::ExecArray(job->args);
  Settings settings;
  std::vector<HostJob> jobs;
  // Exactly the descriptors the shares need: one more (an outcome channel's end) would keep
  // that clone's channel open past the stand-in's part in it.
  if (const int wrong = ParseStandIn(static_cast<int>(job->args.size()), job_argv.data(), fds,
                                     /*all_fds=*/true, &settings, &jobs);
      wrong != 0) {
    for (int fd : fds) close(fd);
    return wrong;
  }
  if (settings.parent_pid != parent_pid) {
    std::fprintf(stderr, "flurry-remote: a job for another VM\n");
    return 1;
  }
  return RunStandIn(settings, jobs, LoadCommon(settings, preloaded, cluster_path, member));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string_view(argv[1]) == "status") {
    setenv("GRPC_VERBOSITY", "NONE", 1);  // this program says what went wrong
    return Status(argc - 1, argv + 1, STDOUT_FILENO, nullptr, "", "");
  }
  if (argc > 1 && std::string_view(argv[1]) == "spare") return Spare(argc - 1, argv + 1);
  // A stand-in started for its ticket: its descriptors are fd 3, 4, ... (enough of them for
  // the largest ticket; ParseStandIn takes those its shares need).
  std::vector<int> fds;
  for (int fd = kControlFd; fd < kControlFd + 2 * 4096; ++fd) fds.push_back(fd);
  Settings settings;
  std::vector<HostJob> jobs;
  if (const int wrong = ParseStandIn(argc, argv, fds, /*all_fds=*/false, &settings, &jobs);
      wrong != 0) {
    return wrong;
  }
  if (!TieToParent(settings.parent_pid)) return 1;
  return RunStandIn(settings, jobs, LoadCommon(settings, nullptr, "", ""));
}
