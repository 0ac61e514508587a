// What flurryd sends a clone VMM it started ahead of time (`flurry clone-vmm`, a "warm" VMM:
// loaded, its VM made) once there is a clone for it to become: the `flurry restore` command
// line it runs, the directory it runs in and the page server's key. One message on a stream
// socket, then it is closed; EOF before a message means "never mind: exit". Wire format
// (little-endian), docs/protocols/clone_vmm.md:
//   u32 magic "FLYW" | u16 version (1) | u16 string count (2..kMaxStrings) |
//   u32 payload length (<= kMaxPayload) | u32 reserved (0) | u64 fnv1a64(payload) |
//   payload: the strings, each ended by a NUL: work dir, key, then the arguments
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/error.h"

namespace flurry {

struct CloneVmmRequest {
  std::string work_dir;           // the clone's directory: its cwd
  std::string page_key;           // $FLURRY_PAGE_KEY of the clone (never on a command line)
  std::vector<std::string> args;  // argv, argv[0] included: "flurry", "restore", ...
};

constexpr size_t kCloneVmmRequestMaxStrings = 256;
constexpr size_t kCloneVmmRequestMaxPayload = 64 * 1024;

// The message's bytes; fails for a request over the caps or with a NUL inside a string.
Result<std::vector<uint8_t>> EncodeCloneVmmRequest(const CloneVmmRequest& request);
// The request in `bytes` (one whole message, nothing after it).
Result<CloneVmmRequest> DecodeCloneVmmRequest(std::span<const uint8_t> bytes);

// Writes the message to `fd`, a stream socket (a peer gone is EPIPE, never SIGPIPE).
Result<void> SendCloneVmmRequest(int fd, const CloneVmmRequest& request);
// Blocks for the message on `fd`; nullopt at EOF before any byte (the sender gave up).
Result<std::optional<CloneVmmRequest>> ReceiveCloneVmmRequest(int fd);

}  // namespace flurry
