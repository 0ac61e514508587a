// ApiServer and its JSON protocol, driven through a real Unix socket with a fake handler in
// place of Vm::Control (no KVM needed).
#include "vmm/api_server.h"

#include <dirent.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <vector>

namespace flurry {
namespace {

using Clock = std::chrono::steady_clock;
using Kind = ControlRequest::Kind;

// ---------------------------------------------------------------------------------------------
// Protocol

TEST(ApiProtocol, ParsesEveryOp) {
  auto status = ParseApiRequest(R"({"op":"status"})");
  ASSERT_TRUE(status) << status.error().message();
  EXPECT_EQ(status->kind, Kind::kStatus);
  EXPECT_EQ(ParseApiRequest(R"({"op":"pause"})")->kind, Kind::kPause);
  EXPECT_EQ(ParseApiRequest(R"( { "op" : "resume" } )")->kind, Kind::kResume);
  auto snapshot = ParseApiRequest(R"({"op":"snapshot","dir":"/tmp/s 1"})");
  ASSERT_TRUE(snapshot) << snapshot.error().message();
  EXPECT_EQ(snapshot->kind, Kind::kSnapshot);
  EXPECT_EQ(snapshot->directory, "/tmp/s 1");
  auto clone = ParseApiRequest(R"({"count":7,"op":"clone"})");
  ASSERT_TRUE(clone) << clone.error().message();
  EXPECT_EQ(clone->kind, Kind::kClone);
  EXPECT_EQ(clone->count, 7);
  EXPECT_EQ(ParseApiRequest(R"({"op":"clone","count":4096})")->count, 4096);
}

TEST(ApiProtocol, RefusesBadRequests) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"", "malformed JSON"},
      {"garbage", "malformed JSON"},
      {R"({"op":"status")", "malformed JSON"},
      {R"({"op":"status"} trailing)", "malformed JSON"},
      {"\xff\xfe", "malformed JSON"},
      {"{\"op\":\"stat\xffus\"}", "malformed JSON"},  // invalid UTF-8
      {"[1,2]", "JSON object"},
      {"42", "JSON object"},
      {"null", "JSON object"},
      {"{}", "missing \"op\""},
      {R"({"op":3})", "\"op\" must be a string"},
      {R"({"op":"reboot"})", "unknown op \"reboot\""},
      {R"({"op":"status","dir":"/x"})", "unknown field \"dir\""},
      {R"({"op":"clone","count":1,"extra":true})", "unknown field \"extra\""},
      {R"({"op":"snapshot"})", "snapshot needs \"dir\""},
      {R"({"op":"snapshot","dir":7})", "\"dir\" must be a string"},
      {R"({"op":"snapshot","dir":""})", "absolute path"},
      {R"({"op":"snapshot","dir":"relative/dir"})", "absolute path"},
      {R"({"op":"snapshot","dir":"/a\u0000b"})", "NUL"},
      {R"({"op":"clone"})", "clone needs \"count\""},
      {R"({"op":"clone","count":0})", "1..4096"},
      {R"({"op":"clone","count":-1})", "1..4096"},
      {R"({"op":"clone","count":4097})", "1..4096"},
      {R"({"op":"clone","count":18446744073709551615})", "1..4096"},
      {R"({"op":"clone","count":-9223372036854775808})", "1..4096"},
      {R"({"op":"clone","count":1e400})", ""},
      {R"({"op":"clone","count":99999999999999999999999})", "must be an integer"},
      {R"({"op":"clone","count":2.5})", "must be an integer"},
      {R"({"op":"clone","count":"2"})", "must be an integer"},
      {R"({"op":"clone","count":true})", "must be an integer"},
  };
  for (const auto& [line, expected] : cases) {
    auto r = ParseApiRequest(line);
    ASSERT_FALSE(r) << "accepted: " << line;
    EXPECT_NE(r.error().message().find(expected), std::string::npos)
        << line << " -> " << r.error().message();
  }
  std::string long_dir = "/" + std::string(5000, 'a');
  EXPECT_FALSE(ParseApiRequest(R"({"op":"snapshot","dir":")" + long_dir + "\"}"));
  EXPECT_FALSE(ParseApiRequest(std::string(kMaxApiLineBytes + 1, ' ')));
}

TEST(ApiProtocol, DeepNestingIsRefusedWithoutCrashing) {
  const size_t depth = kMaxApiLineBytes / 2;
  std::string arrays(depth, '[');
  arrays += std::string(depth, ']');
  EXPECT_FALSE(ParseApiRequest(arrays));
  std::string objects;
  for (int i = 0; i < 10000; ++i) objects += "{\"a\":";
  objects += "1" + std::string(10000, '}');
  EXPECT_FALSE(ParseApiRequest(objects));
}

TEST(ApiProtocol, LongUnknownOpIsQuotedShortly) {
  auto r = ParseApiRequest(R"({"op":")" + std::string(10000, 'x') + "\"}");
  ASSERT_FALSE(r);
  EXPECT_LT(r.error().message().size(), 200u) << r.error().message();
}

TEST(ApiProtocol, RequestsRoundTrip) {
  ControlRequest snapshot{Kind::kSnapshot, "/tmp/snap \"quoted\"", 0, ""};
  std::string line = FormatApiRequest(snapshot);
  ASSERT_EQ(line.back(), '\n');
  line.pop_back();
  auto parsed = ParseApiRequest(line);
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->directory, snapshot.directory);
  EXPECT_EQ(FormatApiRequest({Kind::kClone, "", 3, ""}), "{\"op\":\"clone\",\"count\":3}\n");
  EXPECT_EQ(FormatApiRequest({Kind::kStatus, "", 0, ""}), "{\"op\":\"status\"}\n");
  line = FormatApiRequest({Kind::kServe, "", 0, "10.0.0.1:7000"});
  EXPECT_EQ(line, "{\"op\":\"serve\",\"address\":\"10.0.0.1:7000\"}\n");
  line.pop_back();
  parsed = ParseApiRequest(line);
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_EQ(parsed->kind, Kind::kServe);
  EXPECT_EQ(parsed->address, "10.0.0.1:7000");
  EXPECT_FALSE(parsed->multicast);
  line = FormatApiRequest({Kind::kServe, "", 0, "10.0.0.1:7000", true});
  EXPECT_EQ(line, "{\"op\":\"serve\",\"address\":\"10.0.0.1:7000\",\"multicast\":true}\n");
  line.pop_back();
  parsed = ParseApiRequest(line);
  ASSERT_TRUE(parsed) << parsed.error().message();
  EXPECT_TRUE(parsed->multicast);
  EXPECT_FALSE(ParseApiRequest(R"({"op":"serve","address":"10.0.0.1:1","multicast":1})"));
  EXPECT_FALSE(ParseApiRequest(R"({"op":"status","multicast":true})"));
  EXPECT_FALSE(ParseApiRequest(R"({"op":"serve","address":"nowhere"})"));
  EXPECT_FALSE(ParseApiRequest(R"({"op":"serve"})"));
  EXPECT_FALSE(ParseApiRequest(R"({"op":"status","address":"10.0.0.1:1"})"));
}

TEST(ApiProtocol, OnDemandCountersRoundTrip) {
  ControlReply reply;
  reply.state = "running";
  LazyStats stats;
  stats.faults = 5;
  stats.fetched_pages = 40;
  stats.zero_pages = 7;
  stats.fresh_pages = 8;
  stats.overwritten_pages = 9;
  stats.pending_pages = 11;
  reply.on_demand = stats;
  std::string line = FormatApiReply(Kind::kStatus, reply);
  line.pop_back();
  auto parsed = ParseApiReply(line);
  ASSERT_TRUE(parsed) << parsed.error().message();
  ASSERT_TRUE(parsed->on_demand.has_value());
  EXPECT_EQ(parsed->on_demand->faults, 5u);
  EXPECT_EQ(parsed->on_demand->fetched_pages, 40u);
  EXPECT_EQ(parsed->on_demand->zero_pages, 7u);
  EXPECT_EQ(parsed->on_demand->fresh_pages, 8u);
  EXPECT_EQ(parsed->on_demand->overwritten_pages, 9u);
  EXPECT_EQ(parsed->on_demand->pending_pages, 11u);
}

ControlReply SampleReply() {
  ControlReply reply;
  reply.state = "running";
  reply.clone_id = 3;
  reply.family_id = 0xfedcba9876543210ULL;
  reply.ram_size = 512ULL << 20;
  reply.syscalls = 12345;
  reply.clone_ids = {4, 5};
  reply.clone_pids = {1000, 1001};
  reply.descriptor_bytes = 2048;
  reply.memory_bytes = 1ULL << 33;
  return reply;
}

TEST(ApiProtocol, RepliesCarryOpSpecificFields) {
  const ControlReply reply = SampleReply();
  EXPECT_EQ(FormatApiReply(Kind::kStatus, reply),
            "{\"ok\":true,\"state\":\"running\",\"clone_id\":3,\"family_id\":\"fedcba9876543210\","
            "\"ram_size\":536870912,\"syscalls\":12345}\n");
  const std::string clone = FormatApiReply(Kind::kClone, reply);
  EXPECT_NE(clone.find("\"clone_ids\":[4,5],\"clone_pids\":[1000,1001]"), std::string::npos)
      << clone;
  EXPECT_EQ(clone.find("descriptor_bytes"), std::string::npos) << clone;
  const std::string snapshot = FormatApiReply(Kind::kSnapshot, reply);
  EXPECT_NE(snapshot.find("\"descriptor_bytes\":2048,\"memory_bytes\":8589934592"),
            std::string::npos)
      << snapshot;
  EXPECT_EQ(snapshot.find("clone_ids"), std::string::npos) << snapshot;
  EXPECT_EQ(FormatApiReply(Kind::kPause, ControlReply::Failure("the guest has exited", "exited")),
            "{\"ok\":false,\"error\":\"the guest has exited\",\"state\":\"exited\"}\n");
  // Invalid UTF-8 in an error (a path) is replaced, never thrown.
  EXPECT_NE(FormatApiError("bad \xff path").find("\"ok\":false"), std::string::npos);
}

TEST(ApiProtocol, RepliesRoundTrip) {
  const ControlReply reply = SampleReply();
  for (Kind kind : {Kind::kStatus, Kind::kClone, Kind::kSnapshot}) {
    std::string line = FormatApiReply(kind, reply);
    auto parsed = ParseApiReply(line);
    ASSERT_TRUE(parsed) << parsed.error().message();
    EXPECT_TRUE(parsed->ok);
    EXPECT_EQ(parsed->state, "running");
    EXPECT_EQ(parsed->clone_id, 3);
    EXPECT_EQ(parsed->family_id, reply.family_id);
    EXPECT_EQ(parsed->ram_size, reply.ram_size);
    EXPECT_EQ(parsed->syscalls, reply.syscalls);
    if (kind == Kind::kClone) {
      EXPECT_EQ(parsed->clone_pids, reply.clone_pids);
    }
    if (kind == Kind::kSnapshot) {
      EXPECT_EQ(parsed->memory_bytes, reply.memory_bytes);
    }
  }
  auto failure = ParseApiReply(FormatApiError("nope"));
  ASSERT_TRUE(failure);
  EXPECT_FALSE(failure->ok);
  EXPECT_EQ(failure->error, "nope");
  EXPECT_FALSE(ParseApiReply("not json"));
  EXPECT_FALSE(ParseApiReply("{}"));
  EXPECT_FALSE(ParseApiReply(R"({"ok":true,"family_id":"xyz"})"));
  EXPECT_FALSE(ParseApiReply(R"({"ok":true,"clone_ids":[1,"a"]})"));
}

// ---------------------------------------------------------------------------------------------
// Server

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "flurry_api_XXXXXX").string();
    if (mkdtemp(tmpl.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  std::string Path(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

// Records requests; answers with SampleReply().
struct FakeVm {
  std::mutex mutex;
  std::vector<ControlRequest> requests;
  ApiServer::Handler Handler() {
    return [this](const ControlRequest& request) {
      std::lock_guard lock(mutex);
      requests.push_back(request);
      return SampleReply();
    };
  }
  size_t count() {
    std::lock_guard lock(mutex);
    return requests.size();
  }
};

int Connect(const std::string& path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
  if (connect(fd, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

bool SendAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Reads up to `lines` lines (or EOF / 10 s).
std::vector<std::string> ReadLines(int fd, size_t lines, int timeout_ms = 10000) {
  std::vector<std::string> out;
  std::string buffer;
  auto deadline = Clock::now() + std::chrono::milliseconds(timeout_ms);
  while (out.size() < lines) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char chunk[4096];
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n <= 0) break;
    buffer.append(chunk, static_cast<size_t>(n));
    size_t newline;
    while ((newline = buffer.find('\n')) != std::string::npos) {
      out.push_back(buffer.substr(0, newline));
      buffer.erase(0, newline + 1);
    }
  }
  return out;
}

bool IsOk(const std::string& line) { return line.rfind("{\"ok\":true", 0) == 0; }
bool IsError(const std::string& line) { return line.rfind("{\"ok\":false,\"error\":", 0) == 0; }

TEST(ApiServer, ServesRequestsInOrder) {
  TempDir dir;
  FakeVm vm;
  auto server = ApiServer::Start(dir.Path("api.sock"), vm.Handler());
  ASSERT_TRUE(server) << server.error().message();
  struct stat st {};
  ASSERT_EQ(stat(dir.Path("api.sock").c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  int fd = Connect(dir.Path("api.sock"));
  ASSERT_GE(fd, 0);
  // Several requests in one write, one split across writes, one with CRLF.
  ASSERT_TRUE(SendAll(fd, "{\"op\":\"status\"}\n{\"op\":\"pause\"}\n{\"op\":\"res"));
  usleep(20000);
  ASSERT_TRUE(SendAll(fd, "ume\"}\r\n{\"op\":\"clone\",\"count\":2}\n"));
  auto lines = ReadLines(fd, 4);
  ASSERT_EQ(lines.size(), 4u);
  for (const auto& line : lines) EXPECT_TRUE(IsOk(line)) << line;
  EXPECT_NE(lines[3].find("clone_pids"), std::string::npos) << lines[3];
  ASSERT_EQ(vm.count(), 4u);
  EXPECT_EQ(vm.requests[0].kind, Kind::kStatus);
  EXPECT_EQ(vm.requests[1].kind, Kind::kPause);
  EXPECT_EQ(vm.requests[2].kind, Kind::kResume);
  EXPECT_EQ(vm.requests[3].kind, Kind::kClone);
  EXPECT_EQ(vm.requests[3].count, 2);
  close(fd);

  (*server)->Stop();
  EXPECT_NE(access(dir.Path("api.sock").c_str(), F_OK), 0) << "socket file left behind";
}

TEST(ApiServer, BadInputGetsErrorsAndTheConnectionStaysUsable) {
  TempDir dir;
  FakeVm vm;
  auto server = ApiServer::Start(dir.Path("api.sock"), vm.Handler());
  ASSERT_TRUE(server) << server.error().message();
  int fd = Connect(dir.Path("api.sock"));
  ASSERT_GE(fd, 0);
  std::string input = "garbage\n";
  input += "\n";                                 // empty line
  input += std::string(200 * 1024, 'x') + "\n";  // one huge line: one error
  input += "{\"op\":\"unknown\"}\n";
  input += "{\"op\":\"clone\",\"count\":100000}\n";
  input += std::string("\0\1\2\xff\n", 5);
  input += "{\"op\":\"status\"}\n";
  ASSERT_TRUE(SendAll(fd, input));
  auto lines = ReadLines(fd, 7);
  ASSERT_EQ(lines.size(), 7u);
  for (size_t i = 0; i < 6; ++i) EXPECT_TRUE(IsError(lines[i])) << i << ": " << lines[i];
  EXPECT_NE(lines[2].find("longer than 65536"), std::string::npos) << lines[2];
  EXPECT_NE(lines[3].find("unknown op"), std::string::npos) << lines[3];
  EXPECT_TRUE(IsOk(lines[6])) << lines[6];
  EXPECT_EQ(vm.count(), 1u) << "only the valid request reaches the VM";
  // Nothing more arrives: exactly one reply per line.
  EXPECT_TRUE(ReadLines(fd, 1, 200).empty());
  close(fd);
}

TEST(ApiServer, LastLineWithoutNewlineIsAnsweredAtEof) {
  TempDir dir;
  FakeVm vm;
  auto server = ApiServer::Start(dir.Path("api.sock"), vm.Handler());
  ASSERT_TRUE(server) << server.error().message();
  int fd = Connect(dir.Path("api.sock"));
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, "{\"op\":\"status\"}"));
  shutdown(fd, SHUT_WR);
  auto lines = ReadLines(fd, 2);
  ASSERT_EQ(lines.size(), 1u);
  EXPECT_TRUE(IsOk(lines[0])) << lines[0];
  close(fd);
}

TEST(ApiServer, ServesConnectionsOneAfterAnother) {
  TempDir dir;
  FakeVm vm;
  auto server = ApiServer::Start(dir.Path("api.sock"), vm.Handler());
  ASSERT_TRUE(server) << server.error().message();
  for (int i = 0; i < 20; ++i) {
    int fd = Connect(dir.Path("api.sock"));
    ASSERT_GE(fd, 0);
    ASSERT_TRUE(SendAll(fd, "{\"op\":\"status\"}\n"));
    auto lines = ReadLines(fd, 1);
    ASSERT_EQ(lines.size(), 1u);
    close(fd);
  }
  // A peer that connects and leaves at once.
  int fd = Connect(dir.Path("api.sock"));
  close(fd);
  fd = Connect(dir.Path("api.sock"));
  ASSERT_TRUE(SendAll(fd, "{\"op\":\"status\"}\n"));
  EXPECT_EQ(ReadLines(fd, 1).size(), 1u);
  close(fd);
  EXPECT_EQ(vm.count(), 21u);
}

TEST(ApiServer, SilentClientDoesNotBlockStop) {
  TempDir dir;
  FakeVm vm;
  auto server = ApiServer::Start(dir.Path("api.sock"), vm.Handler());
  ASSERT_TRUE(server) << server.error().message();
  int fd = Connect(dir.Path("api.sock"));
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, "{\"op\":\"sta"));  // half a request, then silence
  usleep(50000);
  auto start = Clock::now();
  (*server)->Stop();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  EXPECT_TRUE(ReadLines(fd, 1, 1000).empty());  // connection closed without a reply
  close(fd);
}

TEST(ApiServer, ClientNotReadingRepliesDoesNotBlockStop) {
  TempDir dir;
  FakeVm vm;
  auto server = ApiServer::Start(dir.Path("api.sock"), vm.Handler());
  ASSERT_TRUE(server) << server.error().message();
  int fd = Connect(dir.Path("api.sock"));
  ASSERT_GE(fd, 0);
  int flags = fcntl(fd, F_GETFL);
  fcntl(fd, F_SETFL, flags | O_NONBLOCK);
  // Write requests until both socket buffers are full (the server blocks sending replies).
  std::string batch;
  for (int i = 0; i < 1000; ++i) batch += "{\"op\":\"status\"}\n";
  auto deadline = Clock::now() + std::chrono::seconds(10);
  while (Clock::now() < deadline) {
    ssize_t n = send(fd, batch.data(), batch.size(), MSG_NOSIGNAL);
    if (n < 0 && errno == EAGAIN) {
      usleep(100000);
      if (send(fd, batch.data(), batch.size(), MSG_NOSIGNAL) < 0 && errno == EAGAIN) break;
    }
  }
  auto start = Clock::now();
  (*server)->Stop();
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(2));
  close(fd);
}

TEST(ApiServer, RefusesAnExistingFile) {
  TempDir dir;
  const std::string path = dir.Path("file");
  FILE* f = std::fopen(path.c_str(), "w");
  std::fputs("keep me", f);
  std::fclose(f);
  FakeVm vm;
  auto server = ApiServer::Start(path, vm.Handler());
  ASSERT_FALSE(server);
  EXPECT_NE(server.error().message().find("not a socket"), std::string::npos)
      << server.error().message();
  struct stat st {};
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 7);
  EXPECT_FALSE(ApiServer::Start(dir.Path(""), vm.Handler()));  // a directory
  EXPECT_FALSE(ApiServer::Start("", vm.Handler()));
  EXPECT_FALSE(ApiServer::Start(dir.Path(std::string(200, 'a')), vm.Handler()));
  EXPECT_FALSE(ApiServer::Start(dir.Path("missing/api.sock"), vm.Handler()));
}

TEST(ApiServer, ReplacesAStaleSocketButNotALiveOne) {
  TempDir dir;
  const std::string path = dir.Path("api.sock");
  {
    // A socket file nobody listens on (a crashed flurry).
    int fd = socket(AF_UNIX, SOCK_STREAM, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    std::snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr*>(&address), sizeof address), 0);
    close(fd);
  }
  FakeVm vm;
  auto first = ApiServer::Start(path, vm.Handler());
  ASSERT_TRUE(first) << first.error().message();
  auto second = ApiServer::Start(path, vm.Handler());
  ASSERT_FALSE(second);
  EXPECT_NE(second.error().message().find("another process"), std::string::npos)
      << second.error().message();
  // The first server still works.
  int fd = Connect(path);
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, "{\"op\":\"status\"}\n"));
  EXPECT_EQ(ReadLines(fd, 1).size(), 1u);
  close(fd);
}

// Lists the fds of this process whose /proc/self/fd link starts with `prefix`.
std::vector<int> FdsLike(const std::string& prefix) {
  std::vector<int> fds;
  DIR* d = opendir("/proc/self/fd");
  if (d == nullptr) return fds;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char link[256] = {};
    std::string p = std::string("/proc/self/fd/") + e->d_name;
    if (readlink(p.c_str(), link, sizeof link - 1) > 0 && std::string(link).rfind(prefix, 0) == 0) {
      fds.push_back(std::atoi(e->d_name));
    }
  }
  closedir(d);
  return fds;
}

// VM fork fork()s the VMM: the child must not hold the server's sockets (a client waiting for
// EOF would otherwise wait for every clone to end).
TEST(ApiServer, ForkedChildrenDoNotHoldTheSockets) {
  TempDir dir;
  FakeVm vm;
  auto server = ApiServer::Start(dir.Path("api.sock"), vm.Handler());
  ASSERT_TRUE(server) << server.error().message();
  int fd = Connect(dir.Path("api.sock"));
  ASSERT_GE(fd, 0);
  ASSERT_TRUE(SendAll(fd, "{\"op\":\"status\"}\n"));
  ASSERT_EQ(ReadLines(fd, 1).size(), 1u);  // the connection is accepted and served
  const size_t sockets_here = FdsLike("socket:").size();
  ASSERT_GE(sockets_here, 3u);  // listener, server end, client end

  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    // Only the test's client end remains.
    const size_t sockets = FdsLike("socket:").size();
    const size_t eventfds = FdsLike("anon_inode:[eventfd]").size();
    usleep(1500000);  // outlive the parent's EOF check below
    _exit(sockets == 1 && eventfds == 0 ? 0 : 1);
  }
  // The server sees EOF, closes its end: the client sees EOF at once, not when the child ends.
  shutdown(fd, SHUT_WR);
  auto start = Clock::now();
  EXPECT_TRUE(ReadLines(fd, 1, 5000).empty());
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(1000))
      << "the forked child held the server's end of the connection";
  close(fd);
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "the child inherited the server's sockets";
  // Destroying the server in a forked child must not remove the parent's socket file.
  pid_t child2 = fork();
  ASSERT_GE(child2, 0);
  if (child2 == 0) {
    server->reset();
    _exit(0);
  }
  ASSERT_EQ(waitpid(child2, &status, 0), child2);
  EXPECT_EQ(access(dir.Path("api.sock").c_str(), F_OK), 0);
  int again = Connect(dir.Path("api.sock"));
  ASSERT_GE(again, 0);
  ASSERT_TRUE(SendAll(again, "{\"op\":\"status\"}\n"));
  EXPECT_EQ(ReadLines(again, 1).size(), 1u);
  close(again);
}

}  // namespace
}  // namespace flurry
