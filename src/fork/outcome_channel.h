// The message a clone's VMM sends its parent's VMM when the clone ends: how it ended and its
// result blob. One message per clone on a stream socket, then EOF. Wire format (little-endian):
//   u32 magic "FLYO" | u16 version (1) | u16 kind | i32 status | i32 signal |
//   u64 result_length (<= SF_MAX_RESULT) | u64 fnv1a64(result) | result bytes
// See docs/protocols/clone_channel.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.h"

namespace flurry {

struct CloneOutcome {
  int32_t kind = 0;  // SF_OUTCOME_*
  int32_t status = 0;
  int32_t signal = 0;
  std::vector<uint8_t> result;
};

Result<void> SendOutcome(int fd, const CloneOutcome& outcome);
// Blocks until the outcome (or EOF: then kind is SF_OUTCOME_LOST, or KILLED if `killed`).
// A malformed message is an error. EINTR is returned as an error with code EINTR.
Result<CloneOutcome> ReceiveOutcome(int fd);
// The same from the bytes of a whole channel (read to EOF): no bytes is SF_OUTCOME_LOST.
Result<CloneOutcome> DecodeOutcome(std::span<const uint8_t> bytes);
// The largest message a channel can carry.
size_t MaxOutcomeBytes();

uint64_t Fnv1a64(const uint8_t* data, size_t length);

}  // namespace flurry
