// ProcessRecord: one guest process as a VM descriptor records it (plain data; the live form is
// a slot of guest/process_table.h).
#pragma once

#include <cstdint>

namespace flurry {

// One process of a VM of several processes (guest/process_table.h), as every process of the
// VM saw it at the capture instant.
struct ProcessRecord {
  int32_t pid = 0;
  int32_t ppid = 0;  // 0 for the VM's init
  int32_t pgid = 0;
  int32_t sid = 0;
  bool zombie = false;       // ended, not yet reaped: wait_status is what wait4 reports
  int32_t wait_status = 0;   // zombie only
  uint64_t signals = 0;      // bit (n - 1): signal n sent by another process, not yet taken
  int32_t sender = 0;        // the pid that sent the last of them
  uint32_t exit_signal = 0;  // what the parent gets when it ends (0..64)
  bool no_zombies = false;   // its children end without becoming zombies

  bool operator==(const ProcessRecord&) const = default;
};

}  // namespace flurry
