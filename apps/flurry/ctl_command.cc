#include "ctl_command.h"

#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>

#include "base/parse.h"
#include "base/unique_fd.h"
#include "net/page_protocol.h"
#include "run_command.h"
#include "vmm/api_server.h"

namespace flurry {
namespace {

using Clock = std::chrono::steady_clock;

// Longest reply line read: a clone reply for kMaxApiCloneCount clones is well below this.
constexpr size_t kMaxReplyBytes = 1 << 20;

Result<ControlRequest> RequestFromCommand(const std::vector<std::string>& command) {
  if (command.empty())
    return Fail("missing command (status, pause, resume, snapshot DIR, clone N)");
  const std::string& op = command[0];
  ControlRequest request;
  auto expect_args = [&](size_t n) -> Result<void> {
    if (command.size() - 1 != n) {
      return Fail("'{}' takes {} argument{}", op, n == 0 ? "no" : std::to_string(n),
                  n == 1 ? "" : "s");
    }
    return {};
  };
  if (op == "status" || op == "pause" || op == "resume") {
    FLURRY_TRY(expect_args(0));
    request.kind = op == "status"  ? ControlRequest::Kind::kStatus
                   : op == "pause" ? ControlRequest::Kind::kPause
                                   : ControlRequest::Kind::kResume;
    return request;
  }
  if (op == "snapshot") {
    FLURRY_TRY(expect_args(1));
    if (command[1].empty()) return Fail("snapshot: empty directory");
    std::error_code ec;
    // The server needs an absolute path (its working directory is not ours).
    auto absolute = std::filesystem::absolute(command[1], ec);
    if (ec) return Fail("snapshot: {}: {}", command[1], ec.message());
    request.kind = ControlRequest::Kind::kSnapshot;
    request.directory = absolute.lexically_normal().string();
    if (request.directory.size() > 1 && request.directory.back() == '/') {
      request.directory.pop_back();
    }
    return request;
  }
  if (op == "clone") {
    FLURRY_TRY(expect_args(1));
    const std::string& text = command[1];
    int32_t count = 0;
    auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), count);
    if (ec != std::errc() || end != text.data() + text.size() || count < 1 ||
        count > kMaxApiCloneCount) {
      return Fail("clone: count must be an integer 1..{}, not '{}'", kMaxApiCloneCount, text);
    }
    request.kind = ControlRequest::Kind::kClone;
    request.count = count;
    return request;
  }
  if (op == "serve") {
    if (command.size() == 3 && command[2] == "multicast") {
      request.multicast = true;
    } else {
      FLURRY_TRY(expect_args(1));
    }
    FLURRY_TRY_CTX(ParseHostPort(command[1]), "serve");
    request.kind = ControlRequest::Kind::kServe;
    request.address = command[1];
    return request;
  }
  return Fail(
      "unknown command '{}' (expected status, pause, resume, snapshot DIR, clone N, serve "
      "HOST:PORT [multicast])",
      op);
}

Result<UniqueFd> Connect(const std::string& path) {
  sockaddr_un address{};
  if (path.empty() || path.size() >= sizeof address.sun_path) {
    return Fail("{}: not a usable socket path", path);
  }
  UniqueFd fd(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd.valid()) return FailErrno("socket");
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  if (connect(fd.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    return FailErrno(
        fmt::format("{}: cannot connect (is flurry running with --api {}?)", path, path));
  }
  return fd;
}

Result<void> SendAll(int fd, std::string_view text) {
  while (!text.empty()) {
    ssize_t n = send(fd, text.data(), text.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return FailErrno("sending the request");
    text.remove_prefix(static_cast<size_t>(n));
  }
  return {};
}

Result<std::string> ReadReplyLine(int fd, std::chrono::milliseconds timeout,
                                  const std::string& timeout_text) {
  const auto deadline = Clock::now() + timeout;
  std::string reply;
  char chunk[4096];
  for (;;) {
    const size_t newline = reply.find('\n');
    if (newline != std::string::npos) return reply.substr(0, newline);
    if (reply.size() > kMaxReplyBytes) return Fail("reply longer than {} bytes", kMaxReplyBytes);
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
    if (left <= 0) return Fail("no reply within {}", timeout_text);
    pollfd p{fd, POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(std::min<int64_t>(left, 1 << 30)));
    if (ready < 0 && errno != EINTR) return FailErrno("waiting for the reply");
    if (ready <= 0) continue;
    const ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return FailErrno("reading the reply");
    if (n == 0) return Fail("the connection closed without a reply");
    reply.append(chunk, static_cast<size_t>(n));
  }
}

std::string HumanSize(uint64_t bytes) {
  if (bytes != 0 && bytes % (1ULL << 30) == 0) return fmt::format("{} GiB", bytes >> 30);
  if (bytes != 0 && bytes % (1ULL << 20) == 0) return fmt::format("{} MiB", bytes >> 20);
  if (bytes != 0 && bytes % (1ULL << 10) == 0) return fmt::format("{} KiB", bytes >> 10);
  return fmt::format("{} bytes", bytes);
}

void PrintReply(const ControlRequest& request, const ControlReply& reply) {
  std::string out;
  switch (request.kind) {
    case ControlRequest::Kind::kSnapshot:
      out += fmt::format("snapshot: {}\n", request.directory);
      out += fmt::format("descriptor: {}/descriptor.fvd ({} bytes)\n", request.directory,
                         reply.descriptor_bytes);
      out += fmt::format("memory: {}/memory.img ({} bytes of {} guest memory written)\n",
                         request.directory, reply.memory_bytes, HumanSize(reply.ram_size));
      out += fmt::format("state: {}\n", reply.state);
      break;
    case ControlRequest::Kind::kClone:
      for (size_t i = 0; i < reply.clone_ids.size(); ++i) {
        out += fmt::format("clone {}: pid {}\n", reply.clone_ids[i],
                           i < reply.clone_pids.size() ? reply.clone_pids[i] : 0);
      }
      out += fmt::format("state: {}\n", reply.state);
      break;
    case ControlRequest::Kind::kServe:
      out += fmt::format("serving: {}/{}\n", reply.address, reply.key);
      out += fmt::format("server pid: {}\n", reply.server_pid);
      out += fmt::format("descriptor: {} bytes\n", reply.descriptor_bytes);
      out += fmt::format("restore with: flurry restore tcp://{}/{}\n", reply.address, reply.key);
      out += fmt::format("state: {}\n", reply.state);
      break;
    case ControlRequest::Kind::kStatus:
    case ControlRequest::Kind::kPause:
    case ControlRequest::Kind::kResume:
      out += fmt::format("state: {}\n", reply.state);
      out += fmt::format("clone id: {}\n", reply.clone_id);
      out += fmt::format("family id: {:016x}\n", reply.family_id);
      out += fmt::format("ram: {} ({} bytes)\n", HumanSize(reply.ram_size), reply.ram_size);
      out += fmt::format("syscalls: {}\n", reply.syscalls);
      if (!reply.backend.empty()) out += fmt::format("backend: {}\n", reply.backend);
      if (reply.on_demand) {
        const LazyStats& m = *reply.on_demand;
        out += fmt::format(
            "memory on demand: {} faults; fetched {} pages ({} prefetched) in {} requests, "
            "{:.1f} us each; not fetched: {} zero, {} fresh, {} overwritten; {} bytes "
            "received ({} fetched pages came as all-zero); {} pages still to fetch\n",
            m.faults, m.fetched_pages, m.prefetched_pages, m.fetch_requests, m.mean_fetch_us(),
            m.zero_pages, m.fresh_pages, m.overwritten_pages, m.bytes_received, m.zero_elided,
            m.pending_pages);
      }
      break;
  }
  std::fwrite(out.data(), 1, out.size(), stdout);
  std::fflush(stdout);
}

}  // namespace

CLI::App* AddCtlCommand(CLI::App& app, CtlOptions& options) {
  CLI::App* ctl = app.add_subcommand(
      "ctl",
      "Control a running VM through its --api socket: status, pause, resume, snapshot "
      "DIR, clone N, serve HOST:PORT [multicast]");
  ctl->add_option("--timeout", options.timeout, "How long to wait for the reply")
      ->capture_default_str();
  ctl->add_option("socket", options.socket, "The socket given to flurry run --api")->required();
  ctl->add_option("command", options.command,
                  "status | pause | resume | snapshot DIR | clone N | serve HOST:PORT [multicast]")
      ->required();
  ctl->footer(
      "status: the VM's state, clone ID, memory size and syscall count. pause/resume: stop or\n"
      "continue the guest. snapshot DIR: write descriptor.fvd and memory.img into DIR (run it\n"
      "later with flurry restore DIR). clone N: start N clones of the VM as it stands; they run\n"
      "detached, their output lines prefixed [clone ID]. serve HOST:PORT: freeze the VM as it\n"
      "stands in a page server process (the VM runs on) that serves its descriptor and memory\n"
      "over TCP until the VM has ended and no restored VM is connected; restore it anywhere\n"
      "with flurry restore tcp://HOST:PORT (memory fetched on demand). With multicast, it also\n"
      "pushes each page it sends to every restored VM (IP multicast from HOST's interface).\n"
      "Exit status: 0 when the VM did it; 1 on an error reply or when the socket cannot be\n"
      "reached; 2 on a usage error.");
  return ctl;
}

int CtlCommand(const CtlOptions& options) {
  auto request = RequestFromCommand(options.command);
  if (!request) {
    Complain(request.error().message());
    return 2;
  }
  auto timeout = ParseDuration(options.timeout);
  if (!timeout || timeout->count() <= 0) {
    Complain(
        fmt::format("--timeout: {}", timeout ? "must be positive" : timeout.error().message()));
    return 2;
  }
  auto connection = Connect(options.socket);
  if (!connection) {
    Complain(connection.error().message());
    return 1;
  }
  if (auto sent = SendAll(connection->get(), FormatApiRequest(*request)); !sent) {
    Complain(fmt::format("{}: {}", options.socket, sent.error().message()));
    return 1;
  }
  auto line = ReadReplyLine(connection->get(), *timeout, options.timeout);
  if (!line) {
    Complain(fmt::format("{}: {}", options.socket, line.error().message()));
    return 1;
  }
  auto reply = ParseApiReply(*line);
  if (!reply) {
    Complain(fmt::format("{}: {}", options.socket, reply.error().message()));
    return 1;
  }
  if (!reply->ok) {
    Complain(fmt::format("{}: {}", ApiOpName(request->kind), reply->error));
    return 1;
  }
  PrintReply(*request, *reply);
  return 0;
}

}  // namespace flurry
