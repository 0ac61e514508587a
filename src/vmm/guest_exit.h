// GuestExit: how a guest run ended, and the exit status flurry reports for it.
#pragma once

#include <string>

namespace flurry {

struct GuestExit {
  // kLost: the VMM could not go on (a clone whose memory server went away): not the guest's doing.
  enum class Kind { kExited, kSignaled, kTimedOut, kLost };
  Kind kind = Kind::kExited;
  int status = 0;          // kExited: the guest's exit status
  int signal = 0;          // kSignaled: the signal a native process would have died of
  std::string diagnostic;  // one line for stderr ("" for a normal exit)

  // The status `flurry run` exits with: the guest's own, 128+signal, 124 on timeout, 1 when lost.
  int ExitCode() const {
    switch (kind) {
      case Kind::kExited:
        return status;
      case Kind::kSignaled:
        return 128 + signal;
      case Kind::kTimedOut:
        return 124;
      case Kind::kLost:
        return 1;
    }
    return 1;
  }
  // The wait(2) status a parent process in the guest sees (a VMM failure or timeout: killed
  // by SIGKILL).
  int WaitStatus() const {
    if (kind == Kind::kExited) return (status & 0xff) << 8;
    if (kind == Kind::kSignaled) return signal & 0x7f;
    return 9;  // SIGKILL
  }
};

}  // namespace flurry
