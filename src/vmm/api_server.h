// ApiServer: the control socket of a running VM (`flurry run --api SOCKET`, `flurry ctl`).
//
// A listening Unix stream socket at a path, served by one thread ("flurry-api") that accepts one
// connection at a time and answers newline-delimited JSON requests with one JSON reply line
// each (docs/protocols/api.md):
//   {"op":"status"} {"op":"pause"} {"op":"resume"} {"op":"snapshot","dir":"/abs/path"}
//   {"op":"clone","count":N}
// Each well-formed request is handed to a handler (Vm::Control in flurry); anything else a peer
// sends (bad JSON, unknown op or field, out-of-range values, lines over kMaxLineBytes) gets an
// {"ok":false,"error":...} reply and the connection stays usable.
//
// Ownership and threads:
// - The ApiServer owns the socket file (removed on destruction), the listening fd, the current
//   connection's fd and a stop eventfd. Start() and Stop()/~ApiServer() run on the owner's
//   thread; the "flurry-api" thread alone touches the connection and calls the handler.
// - Stop() (and the destructor) wakes the thread through the eventfd — even while a peer is
//   connected and silent, or not reading replies — and joins it. The handler must return by
//   then (Vm::Control does once Vm::Run has returned), so stop the server after Run() and
//   before destroying the Vm.
// - Forks: VM fork (sf_clone, `clone N`) fork()s the VMM on its vCPU thread. The child has no
//   API thread and must never use this object: every fd here is O_CLOEXEC, a fork handler
//   closes the server's fds in every child (so clones do not hold the listening socket or a
//   client's connection open), and Stop()/the destructor do nothing in a process other than
//   the one that called Start() (no unlink of the parent's socket, no join).
#pragma once

#include <sys/types.h>

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <thread>

#include "base/error.h"
#include "base/unique_fd.h"
#include "vmm/vm_control.h"

namespace flurry {

// Longest request line accepted (without its newline). A longer line is answered with an error
// once and discarded up to its newline.
inline constexpr size_t kMaxApiLineBytes = 64 * 1024;
// Most clones one "clone" request may ask for (the snapshot server's spawn limit).
inline constexpr int32_t kMaxApiCloneCount = 4096;

// --- The protocol, shared by the server and `flurry ctl` (no I/O). ---

// Parses one request line (without the newline). Errors are the message the reply carries.
Result<ControlRequest> ParseApiRequest(std::string_view line);
// One reply line (with the newline) for a request of `kind`: the op-specific fields
// (clone_ids/clone_pids, descriptor_bytes/memory_bytes) only for that op.
std::string FormatApiReply(ControlRequest::Kind kind, const ControlReply& reply);
// An error reply line for a request that could not be parsed.
std::string FormatApiError(std::string_view message);
// The request line (with the newline) for `request`.
std::string FormatApiRequest(const ControlRequest& request);
// Parses a reply line. A well-formed {"ok":false} reply is a ControlReply with ok == false;
// an error here means the line itself is not a valid reply.
Result<ControlReply> ParseApiReply(std::string_view line);
// The op name of a request kind ("status", ...).
const char* ApiOpName(ControlRequest::Kind kind);

class ApiServer {
 public:
  // Called on the "flurry-api" thread for each well-formed request.
  using Handler = std::function<ControlReply(const ControlRequest&)>;

  // Binds and listens at `path` (mode 0600) and starts the thread. Refuses a path that exists
  // unless it is a stale socket (nobody accepting), which is replaced.
  static Result<std::unique_ptr<ApiServer>> Start(const std::string& path, Handler handler);

  ~ApiServer();
  ApiServer(const ApiServer&) = delete;
  ApiServer& operator=(const ApiServer&) = delete;

  // Wakes the thread, drops any connection, joins, closes the listening socket and removes the
  // socket file. Idempotent. Owner's thread only.
  void Stop();

  const std::string& path() const { return path_; }

 private:
  ApiServer(std::string path, Handler handler, UniqueFd listener, UniqueFd stop);

  // "flurry-api" thread.
  void Serve();
  // Serves one connection until EOF, an I/O error or stop. Returns false on stop.
  bool ServeConnection(int connection);
  // Writes all of `text`, waiting (poll) for room or for stop.
  enum class SendResult { kSent, kPeerGone, kStopping };
  SendResult SendAll(int connection, std::string_view text);
  // Handles one complete request line; returns the reply line.
  std::string Answer(std::string_view line);

  std::string path_;
  Handler handler_;
  UniqueFd listener_;     // listening socket; closed by Stop()
  UniqueFd stop_;         // eventfd; written by Stop()
  pid_t owner_pid_;       // the process that called Start()
  dev_t socket_dev_ = 0;  // the socket file we bound (Stop() removes only that file)
  ino_t socket_ino_ = 0;
  std::unique_ptr<std::thread> thread_;  // "flurry-api"; leaked, never joined, in a child
  bool stopped_ = false;                 // owner's thread only
};

}  // namespace flurry
