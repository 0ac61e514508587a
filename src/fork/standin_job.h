// The job a VMM hands its spare stand-in (a flurry-remote process started ahead of need, `flurry-
// remote spare`): the stand-in's arguments and descriptors, as a new process would get them on
// its command line and at fds 3, 4, ... (fork/remote_clones.h). On a SOCK_SEQPACKET socket
// (the spare's fd 3), little-endian (docs/protocols/flurryd.md, "The spare stand-in"):
//   first message:  u32 magic "FLSJ" | u16 version (1) | u16 0 | u32 fd_count | u32 args_bytes |
//                   u64 fnv1a64(args) | args (each argument NUL-terminated), with the first
//                   min(fd_count, 250) descriptors attached
//   then, until fd_count descriptors have come: u32 magic "FLSF" | u32 n, with n descriptors.
// A job whose args[1] is "status" is the allocator's `flurry-remote status` query instead, its
// one descriptor the pipe for the answer; the spare answers it and waits for the next job.
// The spare says once, the other way, that it has loaded the cluster and made its channels:
//   ready: u32 magic "FLSR" | u16 version (1) | u16 0
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "base/error.h"
#include "base/unique_fd.h"

namespace flurry {

inline constexpr size_t kMaxStandInJobArgBytes = 64 * 1024;
// A ticket's clones (4096 at most) and a control pipe per host.
inline constexpr size_t kMaxStandInJobFds = 2 * 4096;

struct StandInJob {
  std::vector<std::string> args;
  std::vector<UniqueFd> fds;
};

Result<void> SendStandInJob(int socket, const std::vector<std::string>& args,
                            const std::vector<int>& fds);
// `args` is a whole command line, argv[0] included (so never empty).
// Blocks until a whole job has come. EOF before the first byte: ECONNRESET ("no job").
Result<StandInJob> ReceiveStandInJob(int socket);

// The spare's "ready" message.
Result<void> SendSpareReady(int socket);
// Waits until `until` for the ready message. Fails when the spare has ended (ECONNRESET), sent
// something else (EPROTO) or not said it by then (ETIMEDOUT).
Result<void> ReceiveSpareReady(int socket, std::chrono::steady_clock::time_point until);

}  // namespace flurry
