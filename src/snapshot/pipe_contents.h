// The contents of a guest pipe, captured without disturbing the pipe and put into a new one:
// how a snapshot or a clone keeps the bytes in flight between the guest's fds (PipeRecord).
#pragma once

#include <cstdint>
#include <map>

#include "base/error.h"
#include "base/unique_fd.h"
#include "snapshot/vm_descriptor.h"

namespace flurry {

// The identity of the host pipe `host_fd` is an end of (its inode: the same for both ends and
// in every process holding them).
Result<uint64_t> HostPipeId(int host_fd);

// The pipe `host_fd` is an end of (either end), as record `id`: its capacity and the bytes
// in it, copied with tee(2), so that the pipe itself keeps them. A write end is read through
// a read end opened for the purpose (/proc/self/fd).
Result<PipeRecord> CapturePipe(int host_fd, uint64_t id);

// A new host pipe holding `record`'s bytes, non-blocking (as every guest pipe on the host),
// close-on-exec, O_DIRECT (packet mode) with `packet_mode`.
struct PipeEnds {
  UniqueFd read;
  UniqueFd write;
};
// Pipes made already, by id (a clone of a VM of several processes: its processes share them).
using PipeSet = std::map<uint64_t, PipeEnds>;
Result<PipeEnds> MakePipe(const PipeRecord& record, bool packet_mode);

}  // namespace flurry
