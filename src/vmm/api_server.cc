// The control socket: the JSON protocol (docs/protocols/api.md) and the "flurry-api" thread.
#include "vmm/api_server.h"

#include <poll.h>
#include <pthread.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstring>
#include <exception>
#include <mutex>
#include <nlohmann/json.hpp>

#include "net/page_protocol.h"

namespace flurry {
namespace {

using Json = nlohmann::ordered_json;

// --- Closing the server's fds in forked children ------------------------------------------
//
// VM fork fork()s the VMM on its vCPU thread while the API thread may hold a connection. The
// child must not keep the listening socket or a client's connection open (a client waiting for
// EOF would wait for every clone). Each fd a server opens is recorded here (as fd + 1; 0 is an
// empty slot) right after it is created and forgotten right before it is closed, so a slot
// never names an fd that the parent has closed; a fork in between only leaves an fd open in
// the child. The atfork child handler runs in the child only (async-signal-safe: atomics and
// close). A full table also only leaves fds open in children.
constexpr int kForkCloseSlots = 32;
std::atomic<int> g_fork_close[kForkCloseSlots];

void CloseServerFdsInChild() {
  for (auto& slot : g_fork_close) {
    const int value = slot.exchange(0);
    if (value > 0) ::close(value - 1);
  }
}

void CloseInForkedChildren(int fd) {
  static std::once_flag once;
  std::call_once(once, [] { pthread_atfork(nullptr, nullptr, CloseServerFdsInChild); });
  for (auto& slot : g_fork_close) {
    int expected = 0;
    if (slot.compare_exchange_strong(expected, fd + 1)) return;
  }
}

void ForgetForForkedChildren(int fd) {
  for (auto& slot : g_fork_close) {
    int expected = fd + 1;
    if (slot.compare_exchange_strong(expected, 0)) return;
  }
}

// Closes `fd` after removing it from the fork table.
void CloseServerFd(UniqueFd& fd) {
  if (!fd.valid()) return;
  ForgetForForkedChildren(fd.get());
  fd.Reset();
}

// --- Protocol helpers -------------------------------------------------------------------------

std::string Dump(const Json& j) {
  // Strings come from errors that may quote paths: never let invalid UTF-8 throw.
  return j.dump(-1, ' ', false, Json::error_handler_t::replace) + "\n";
}

// `text` shortened for quoting in an error message.
std::string Quote(std::string_view text) {
  constexpr size_t kMax = 64;
  std::string out(text.substr(0, kMax));
  if (text.size() > kMax) out += "...";
  return "\"" + out + "\"";
}

Result<ControlRequest::Kind> OpKind(std::string_view op) {
  if (op == "status") return ControlRequest::Kind::kStatus;
  if (op == "pause") return ControlRequest::Kind::kPause;
  if (op == "resume") return ControlRequest::Kind::kResume;
  if (op == "snapshot") return ControlRequest::Kind::kSnapshot;
  if (op == "clone") return ControlRequest::Kind::kClone;
  if (op == "serve") return ControlRequest::Kind::kServe;
  return Fail("unknown op {} (expected status, pause, resume, snapshot, clone or serve)",
              Quote(op));
}

Result<ControlRequest> ParseRequestJson(const Json& j) {
  if (!j.is_object()) return Fail("a request must be a JSON object");
  auto op_it = j.find("op");
  if (op_it == j.end()) return Fail("missing \"op\"");
  if (!op_it->is_string()) return Fail("\"op\" must be a string");
  const std::string& op = op_it->get_ref<const std::string&>();
  ControlRequest request;
  request.kind = FLURRY_TRY(OpKind(op));
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& key = it.key();
    const bool allowed =
        key == "op" || (key == "dir" && request.kind == ControlRequest::Kind::kSnapshot) ||
        (key == "count" && request.kind == ControlRequest::Kind::kClone) ||
        ((key == "address" || key == "multicast") && request.kind == ControlRequest::Kind::kServe);
    if (!allowed) return Fail("unknown field {} for op \"{}\"", Quote(key), op);
  }
  if (request.kind == ControlRequest::Kind::kSnapshot) {
    auto dir = j.find("dir");
    if (dir == j.end()) return Fail("snapshot needs \"dir\"");
    if (!dir->is_string()) return Fail("\"dir\" must be a string");
    const std::string& path = dir->get_ref<const std::string&>();
    if (path.empty() || path.front() != '/') return Fail("\"dir\" must be an absolute path");
    if (path.size() >= PATH_MAX) return Fail("\"dir\" is longer than {} bytes", PATH_MAX - 1);
    if (path.find('\0') != std::string::npos) return Fail("\"dir\" contains a NUL byte");
    request.directory = path;
  }
  if (request.kind == ControlRequest::Kind::kServe) {
    auto address = j.find("address");
    if (address == j.end()) return Fail("serve needs \"address\"");
    if (!address->is_string()) return Fail("\"address\" must be a string");
    const std::string& text = address->get_ref<const std::string&>();
    if (text.size() > 255) return Fail("\"address\" is longer than 255 bytes");
    FLURRY_TRY_CTX(ParseHostPort(text), "\"address\"");
    request.address = text;
    if (auto multicast = j.find("multicast"); multicast != j.end()) {
      if (!multicast->is_boolean()) return Fail("\"multicast\" must be true or false");
      request.multicast = multicast->get<bool>();
    }
  }
  if (request.kind == ControlRequest::Kind::kClone) {
    auto count = j.find("count");
    if (count == j.end()) return Fail("clone needs \"count\"");
    if (!count->is_number_integer()) return Fail("\"count\" must be an integer");
    const bool in_range =
        count->is_number_unsigned()
            ? count->get<uint64_t>() <= static_cast<uint64_t>(kMaxApiCloneCount) &&
                  count->get<uint64_t>() >= 1
            : count->get<int64_t>() >= 1 && count->get<int64_t>() <= kMaxApiCloneCount;
    if (!in_range) return Fail("\"count\" must be 1..{}", kMaxApiCloneCount);
    request.count = static_cast<int32_t>(count->get<int64_t>());
  }
  return request;
}

template <typename T>
Result<T> Field(const Json& j, const char* name, T fallback) {
  auto it = j.find(name);
  if (it == j.end()) return fallback;
  if constexpr (std::is_same_v<T, std::string>) {
    if (!it->is_string()) return Fail("\"{}\" must be a string", name);
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) return Fail("\"{}\" must be a boolean", name);
  } else {
    if (!it->is_number_integer()) return Fail("\"{}\" must be an integer", name);
  }
  return it->get<T>();
}

Result<std::vector<int32_t>> IntArray(const Json& j, const char* name) {
  auto it = j.find(name);
  if (it == j.end()) return std::vector<int32_t>{};
  if (!it->is_array()) return Fail("\"{}\" must be an array", name);
  std::vector<int32_t> values;
  for (const Json& v : *it) {
    if (!v.is_number_integer()) return Fail("\"{}\" must hold integers", name);
    values.push_back(v.get<int32_t>());
  }
  return values;
}

Result<ControlReply> ParseReplyJson(const Json& j) {
  if (!j.is_object()) return Fail("a reply must be a JSON object");
  auto ok = j.find("ok");
  if (ok == j.end() || !ok->is_boolean()) return Fail("a reply needs a boolean \"ok\"");
  ControlReply reply;
  reply.ok = ok->get<bool>();
  reply.error = FLURRY_TRY(Field<std::string>(j, "error", ""));
  reply.state = FLURRY_TRY(Field<std::string>(j, "state", ""));
  if (!reply.ok) return reply;
  reply.clone_id = FLURRY_TRY(Field<int32_t>(j, "clone_id", 0));
  const std::string family = FLURRY_TRY(Field<std::string>(j, "family_id", "0"));
  errno = 0;
  char* end = nullptr;
  reply.family_id = std::strtoull(family.c_str(), &end, 16);
  if (errno != 0 || end == family.c_str() || *end != '\0') {
    return Fail("\"family_id\" must be a hex string");
  }
  reply.ram_size = FLURRY_TRY(Field<uint64_t>(j, "ram_size", 0));
  reply.syscalls = FLURRY_TRY(Field<uint64_t>(j, "syscalls", 0));
  reply.backend = FLURRY_TRY(Field<std::string>(j, "backend", ""));
  if (auto m = j.find("on_demand"); m != j.end()) {
    if (!m->is_object()) return Fail("\"on_demand\" must be an object");
    LazyStats stats;
    stats.faults = FLURRY_TRY(Field<uint64_t>(*m, "faults", 0));
    stats.fetched_pages = FLURRY_TRY(Field<uint64_t>(*m, "fetched_pages", 0));
    stats.prefetched_pages = FLURRY_TRY(Field<uint64_t>(*m, "prefetched_pages", 0));
    stats.fetch_requests = FLURRY_TRY(Field<uint64_t>(*m, "fetch_requests", 0));
    stats.fetch_ns = FLURRY_TRY(Field<uint64_t>(*m, "fetch_ns", 0));
    stats.zero_pages = FLURRY_TRY(Field<uint64_t>(*m, "zero_pages", 0));
    stats.fresh_pages = FLURRY_TRY(Field<uint64_t>(*m, "fresh_pages", 0));
    stats.overwritten_pages = FLURRY_TRY(Field<uint64_t>(*m, "overwritten_pages", 0));
    stats.bytes_received = FLURRY_TRY(Field<uint64_t>(*m, "bytes_received", 0));
    stats.zero_elided = FLURRY_TRY(Field<uint64_t>(*m, "zero_elided", 0));
    stats.pending_pages = FLURRY_TRY(Field<uint64_t>(*m, "pending_pages", 0));
    reply.on_demand = stats;
  }
  reply.clone_ids = FLURRY_TRY(IntArray(j, "clone_ids"));
  reply.clone_pids = FLURRY_TRY(IntArray(j, "clone_pids"));
  reply.descriptor_bytes = FLURRY_TRY(Field<uint64_t>(j, "descriptor_bytes", 0));
  reply.memory_bytes = FLURRY_TRY(Field<uint64_t>(j, "memory_bytes", 0));
  reply.address = FLURRY_TRY(Field<std::string>(j, "address", ""));
  reply.key = FLURRY_TRY(Field<std::string>(j, "key", ""));
  reply.server_pid = FLURRY_TRY(Field<int32_t>(j, "server_pid", 0));
  return reply;
}

}  // namespace

const char* ApiOpName(ControlRequest::Kind kind) {
  switch (kind) {
    case ControlRequest::Kind::kStatus:
      return "status";
    case ControlRequest::Kind::kPause:
      return "pause";
    case ControlRequest::Kind::kResume:
      return "resume";
    case ControlRequest::Kind::kSnapshot:
      return "snapshot";
    case ControlRequest::Kind::kClone:
      return "clone";
    case ControlRequest::Kind::kServe:
      return "serve";
  }
  return "?";
}

Result<ControlRequest> ParseApiRequest(std::string_view line) {
  if (line.size() > kMaxApiLineBytes) {
    return Fail("request line longer than {} bytes", kMaxApiLineBytes);
  }
  try {
    // No exceptions for bad input: an invalid document parses to a "discarded" value.
    Json j = Json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return Fail("malformed JSON request");
    return ParseRequestJson(j);
  } catch (const std::exception& e) {  // allocation failure and the like
    return Fail("cannot parse the request: {}", e.what());
  }
}

Result<ControlReply> ParseApiReply(std::string_view line) {
  try {
    Json j = Json::parse(line.begin(), line.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) return Fail("malformed JSON reply");
    return ParseReplyJson(j);
  } catch (const std::exception& e) {  // e.g. an integer that does not fit its field
    return Fail("malformed reply: {}", e.what());
  }
}

std::string FormatApiReply(ControlRequest::Kind kind, const ControlReply& reply) {
  try {
    Json j;
    j["ok"] = reply.ok;
    if (!reply.ok) {
      j["error"] = reply.error;
      if (!reply.state.empty()) j["state"] = reply.state;
      return Dump(j);
    }
    j["state"] = reply.state;
    j["clone_id"] = reply.clone_id;
    j["family_id"] = fmt::format("{:016x}", reply.family_id);
    j["ram_size"] = reply.ram_size;
    j["syscalls"] = reply.syscalls;
    if (!reply.backend.empty()) j["backend"] = reply.backend;
    if (reply.on_demand) {
      const LazyStats& m = *reply.on_demand;
      j["on_demand"] = {{"faults", m.faults},
                        {"fetched_pages", m.fetched_pages},
                        {"prefetched_pages", m.prefetched_pages},
                        {"fetch_requests", m.fetch_requests},
                        {"fetch_ns", m.fetch_ns},
                        {"zero_pages", m.zero_pages},
                        {"fresh_pages", m.fresh_pages},
                        {"overwritten_pages", m.overwritten_pages},
                        {"bytes_received", m.bytes_received},
                        {"zero_elided", m.zero_elided},
                        {"pending_pages", m.pending_pages}};
    }
    if (kind == ControlRequest::Kind::kClone) {
      j["clone_ids"] = reply.clone_ids;
      j["clone_pids"] = reply.clone_pids;
    }
    if (kind == ControlRequest::Kind::kSnapshot) {
      j["descriptor_bytes"] = reply.descriptor_bytes;
      j["memory_bytes"] = reply.memory_bytes;
    }
    if (kind == ControlRequest::Kind::kServe) {
      j["address"] = reply.address;
      j["key"] = reply.key;
      j["server_pid"] = reply.server_pid;
      j["descriptor_bytes"] = reply.descriptor_bytes;
    }
    return Dump(j);
  } catch (const std::exception&) {
    return "{\"ok\":false,\"error\":\"cannot format the reply\"}\n";
  }
}

std::string FormatApiError(std::string_view message) {
  try {
    Json j;
    j["ok"] = false;
    j["error"] = std::string(message);
    return Dump(j);
  } catch (const std::exception&) {
    return "{\"ok\":false,\"error\":\"cannot format the reply\"}\n";
  }
}

std::string FormatApiRequest(const ControlRequest& request) {
  Json j;
  j["op"] = ApiOpName(request.kind);
  if (request.kind == ControlRequest::Kind::kSnapshot) j["dir"] = request.directory;
  if (request.kind == ControlRequest::Kind::kClone) j["count"] = request.count;
  if (request.kind == ControlRequest::Kind::kServe) {
    j["address"] = request.address;
    if (request.multicast) j["multicast"] = true;
  }
  return Dump(j);
}

// --- The server -------------------------------------------------------------------------------

namespace {

Result<void> RemoveStaleSocket(const std::string& path) {
  struct stat st {};
  if (lstat(path.c_str(), &st) != 0) {
    if (errno == ENOENT) return {};
    return FailErrno(path);
  }
  if (!S_ISSOCK(st.st_mode)) return Fail("{}: exists and is not a socket; not replacing it", path);
  // A socket file: in use if something accepts on it.
  UniqueFd probe(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!probe.valid()) return FailErrno("socket");
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  if (connect(probe.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) == 0 ||
      errno == EAGAIN || errno == EINPROGRESS) {
    return Fail("{}: another process is serving this socket", path);
  }
  if (errno != ECONNREFUSED) return FailErrno(fmt::format("{}: probing the existing socket", path));
  if (unlink(path.c_str()) != 0 && errno != ENOENT) {
    return FailErrno(fmt::format("{}: removing the stale socket", path));
  }
  return {};
}

}  // namespace

Result<std::unique_ptr<ApiServer>> ApiServer::Start(const std::string& path, Handler handler) {
  sockaddr_un address{};
  if (path.empty()) return Fail("empty socket path");
  if (path.size() >= sizeof address.sun_path) {
    return Fail("{}: socket path longer than {} bytes", path, sizeof address.sun_path - 1);
  }
  if (path.find('\0') != std::string::npos) return Fail("socket path contains a NUL byte");
  FLURRY_TRY(RemoveStaleSocket(path));

  UniqueFd listener(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0));
  if (!listener.valid()) return FailErrno("socket");
  CloseInForkedChildren(listener.get());
  // Only the owner may drive the VM (a snapshot writes files as this user): the socket file is
  // created 0600 (Linux takes the mode of the socket inode, minus the umask).
  fchmod(listener.get(), 0600);
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, path.c_str(), path.size() + 1);
  if (bind(listener.get(), reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    auto error = FailErrno(fmt::format("{}: bind", path));
    CloseServerFd(listener);
    return error;
  }
  if (listen(listener.get(), 8) != 0) {
    auto error = FailErrno(fmt::format("{}: listen", path));
    CloseServerFd(listener);
    unlink(path.c_str());
    return error;
  }
  UniqueFd stop(eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK));
  if (!stop.valid()) {
    auto error = FailErrno("eventfd");
    CloseServerFd(listener);
    unlink(path.c_str());
    return error;
  }
  CloseInForkedChildren(stop.get());
  std::unique_ptr<ApiServer> server(
      new ApiServer(path, std::move(handler), std::move(listener), std::move(stop)));
  try {
    server->thread_ = std::make_unique<std::thread>([s = server.get()] { s->Serve(); });
  } catch (const std::exception& e) {
    return Fail("starting the API thread: {}", e.what());  // ~ApiServer cleans up
  }
  return server;
}

ApiServer::ApiServer(std::string path, Handler handler, UniqueFd listener, UniqueFd stop)
    : path_(std::move(path)),
      handler_(std::move(handler)),
      listener_(std::move(listener)),
      stop_(std::move(stop)),
      owner_pid_(getpid()) {
  struct stat st {};
  if (stat(path_.c_str(), &st) == 0) {
    socket_dev_ = st.st_dev;
    socket_ino_ = st.st_ino;
  }
}

ApiServer::~ApiServer() { Stop(); }

void ApiServer::Stop() {
  if (stopped_) return;
  stopped_ = true;
  if (getpid() != owner_pid_) {
    // A forked child (a clone): the thread and the socket file are the parent's. Leave both;
    // the fds were closed by the fork handler already.
    (void)thread_.release();
    (void)listener_.Release();
    (void)stop_.Release();
    return;
  }
  if (thread_ && thread_->joinable()) {
    const uint64_t one = 1;
    (void)!::write(stop_.get(), &one, sizeof one);
    thread_->join();
  }
  thread_.reset();
  CloseServerFd(listener_);
  CloseServerFd(stop_);
  // Remove the socket file unless something else has replaced it meanwhile.
  struct stat st {};
  if (lstat(path_.c_str(), &st) == 0 && st.st_dev == socket_dev_ && st.st_ino == socket_ino_) {
    unlink(path_.c_str());
  }
}

void ApiServer::Serve() {
  pthread_setname_np(pthread_self(), "flurry-api");
  for (;;) {
    pollfd fds[2] = {{listener_.get(), POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return;
    }
    if (fds[1].revents != 0) return;
    if (fds[0].revents == 0) continue;
    UniqueFd connection(accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK));
    if (!connection.valid()) {
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        // Out of resources: back off instead of spinning on a readable listener.
        pollfd stop = {stop_.get(), POLLIN, 0};
        if (poll(&stop, 1, 100) > 0) return;
      }
      continue;  // EAGAIN, ECONNABORTED, EINTR, ...
    }
    CloseInForkedChildren(connection.get());
    bool keep_serving = true;
    try {
      keep_serving = ServeConnection(connection.get());
    } catch (const std::exception&) {
      // Out of memory while buffering: drop this connection, keep the server.
    }
    CloseServerFd(connection);
    if (!keep_serving) return;
  }
}

bool ApiServer::ServeConnection(int connection) {
  std::string line;         // the current request line so far
  bool discarding = false;  // inside a line that was too long: skip to its newline
  char chunk[4096];
  for (;;) {
    pollfd fds[2] = {{connection, POLLIN, 0}, {stop_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0) {
      if (errno == EINTR) continue;
      return true;
    }
    if (fds[1].revents != 0) return false;
    if (fds[0].revents == 0) continue;
    const ssize_t n = recv(connection, chunk, sizeof chunk, 0);
    if (n < 0) {
      if (errno == EINTR || errno == EAGAIN) continue;
      return true;
    }
    if (n == 0) {
      // EOF. A last line without its newline is still a request (the peer may only have shut
      // down its writing side).
      if (!discarding && !line.empty()) (void)SendAll(connection, Answer(line));
      return true;
    }
    std::string_view data(chunk, static_cast<size_t>(n));
    while (!data.empty()) {
      const size_t newline = data.find('\n');
      const std::string_view piece = data.substr(0, newline);
      if (!discarding) {
        line.append(piece);
        if (line.size() > kMaxApiLineBytes) {
          line.clear();
          line.shrink_to_fit();
          discarding = true;
          const auto sent = SendAll(
              connection,
              FormatApiError(fmt::format("request line longer than {} bytes", kMaxApiLineBytes)));
          if (sent != SendResult::kSent) return sent == SendResult::kPeerGone;
        }
      }
      if (newline == std::string_view::npos) break;
      data.remove_prefix(newline + 1);
      if (discarding) {
        discarding = false;
        continue;
      }
      const std::string reply = Answer(line);
      line.clear();
      const auto sent = SendAll(connection, reply);
      if (sent != SendResult::kSent) return sent == SendResult::kPeerGone;
    }
  }
}

ApiServer::SendResult ApiServer::SendAll(int connection, std::string_view text) {
  while (!text.empty()) {
    const ssize_t n = send(connection, text.data(), text.size(), MSG_NOSIGNAL);
    if (n > 0) {
      text.remove_prefix(static_cast<size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno != EAGAIN) return SendResult::kPeerGone;
    // The peer is not reading: wait for room, or for Stop().
    pollfd fds[2] = {{connection, POLLOUT, 0}, {stop_.get(), POLLIN, 0}};
    if (poll(fds, 2, -1) < 0 && errno != EINTR) return SendResult::kPeerGone;
    if (fds[1].revents != 0) return SendResult::kStopping;
    if (fds[0].revents & (POLLERR | POLLHUP)) return SendResult::kPeerGone;
  }
  return SendResult::kSent;
}

std::string ApiServer::Answer(std::string_view line) {
  if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
  auto request = ParseApiRequest(line);
  if (!request) return FormatApiError(request.error().message());
  try {
    return FormatApiReply(request->kind, handler_(*request));
  } catch (const std::exception& e) {  // never let an exception leave the API thread
    return FormatApiError(fmt::format("internal error: {}", e.what()));
  }
}

}  // namespace flurry
