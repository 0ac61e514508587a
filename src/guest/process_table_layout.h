// The layout of a ProcessTable's shared memory, for the files that implement ProcessTable
// (process_table.cc: the live table; process_table_image.cc: its image as records and back).
// Internal to src/guest.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

#include "guest/process_table.h"

namespace flurry {

// The first 64 bytes of the table; the slots (SharedProcess) follow.
struct ProcessTable::Header {
  std::atomic<int32_t> last_id;          // the newest pid or tid handed out
  std::atomic<uint32_t> shutdown;        // init has ended: every process ends
  std::atomic<int32_t> gather_host_pid;  // the VMM that gathers the processes for a clone
  std::atomic<uint32_t> gather_number;   // the newest gathering's number
  std::atomic<int32_t> gather_owner;     // the host pid of the VMM gathering now (0: none)
  uint8_t reserved[44];
};

namespace process_table_layout {

// The header (ProcessTable::Header, private: 64 bytes) and the slots.
inline constexpr size_t kHeaderBytes = 64;
inline constexpr size_t kTableBytes =
    kHeaderBytes + sizeof(SharedProcess) * static_cast<size_t>(ProcessTable::kMaxProcesses);

// A slot holding a process: running, or a zombie not yet reaped.
inline bool Live(const SharedProcess& p) {
  const uint32_t s = p.state.load();
  return s == SharedProcess::kRunning || s == SharedProcess::kZombie;
}

}  // namespace process_table_layout
}  // namespace flurry
