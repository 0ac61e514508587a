// GuestState: everything the VMM knows about the guest process besides CPU registers and RAM.
//
// Plain data with one owner (the Vm), touched only by the vCPU thread. It is what a VM
// descriptor carries, next to the vCPU state and the memory map, so a clone can start from it:
// keep every member serialisable (no raw pointers into the VMM; host fds only inside FdTable,
// which records enough to reopen them).
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "arch/x86_64/cpu_signature.h"
#include "guest/fd_table.h"
#include "guest/guest_stack.h"
#include "guest/memory_map.h"
#include "guest/thread_table.h"

namespace flurry {

struct ProcessIdentity {
  int32_t pid = 1;
  int32_t ppid = 0;
  int32_t tid = 1;
  uint64_t clear_child_tid = 0;  // set_tid_address
  uint64_t robust_list = 0;      // set_robust_list head
  uint64_t robust_list_len = 0;
  std::string exe_path;  // what readlink("/proc/self/exe") returns (absolute)
  // prctl(PR_SET_NAME)'s name (at most 15 bytes); empty: the program's file name. Not kept in
  // descriptors: a clone or restored VM has its program's name.
  std::string comm;
  std::string hostname = "flurry";
};

// Linux's struct k_sigaction layout as rt_sigaction passes it (x86-64).
struct GuestSigaction {
  uint64_t handler = 0;
  uint64_t flags = 0;
  uint64_t restorer = 0;
  uint64_t mask = 0;
};
static_assert(sizeof(GuestSigaction) == 32);

// Who sent a pending signal, or what fault raised it: the siginfo its handler is given.
struct PendingSignalInfo {
  int32_t code = 0;   // si_code: SI_USER (kill), SI_TKILL (tgkill/tkill), SEGV_MAPERR, ...
  int32_t pid = 0;    // sender (kill/tgkill)
  uint32_t uid = 0;   // sender
  uint64_t addr = 0;  // faults: si_addr
  // SI_TIMER (a POSIX timer's signal): si_timerid, si_overrun, si_value. Filled when the
  // signal is taken; never stored in SignalState::pending_info (the timer holds them).
  int32_t timer_id = 0;
  int32_t overrun = 0;
  uint64_t value = 0;
};

// ITIMER_REAL (alarm, setitimer): SIGALRM at `deadline_ns`, then every `interval_ns`.
struct IntervalTimer {
  int64_t deadline_ns = 0;  // the guest's CLOCK_MONOTONIC; 0: disarmed
  int64_t interval_ns = 0;  // 0: one-shot

  bool armed() const { return deadline_ns != 0; }
};

// A POSIX per-process timer (timer_create; src/guest/posix_timers.h). Its deadline is on its
// own clock as the guest reads it: CLOCK_MONOTONIC and CLOCK_BOOTTIME carry the guest's
// offset, CLOCK_REALTIME and CLOCK_TAI are the host's.
struct PosixTimer {
  int32_t id = 0;           // timer_t: 0, 1, ... (the lowest free)
  int32_t clock = 0;        // CLOCK_REALTIME, CLOCK_MONOTONIC, CLOCK_BOOTTIME or CLOCK_TAI
  int32_t notify = 0;       // SIGEV_SIGNAL, SIGEV_NONE or SIGEV_THREAD_ID (4)
  int32_t signal = 0;       // sigev_signo (1..64; 0 for SIGEV_NONE)
  int32_t tid = 0;          // SIGEV_THREAD_ID: the thread its signal goes to
  uint64_t value = 0;       // sigev_value: the siginfo's si_value
  int64_t deadline_ns = 0;  // 0: disarmed
  int64_t interval_ns = 0;  // 0: one-shot
  // Its signal is pending (Linux queues one per timer): the timer is not fired again until
  // that signal is taken, which re-arms a periodic timer past now and counts the periods
  // missed meanwhile as the overrun.
  bool queued = false;
  // While queued: a signal of the same number sent otherwise (kill, tgkill) was pending for
  // the same target before it, and is taken first.
  bool behind_plain = false;
  int32_t overrun = 0;         // timer_getoverrun: the overrun of the last signal taken
  int32_t queued_overrun = 0;  // expirations counted while queued (a one-shot re-armed)

  bool armed() const { return deadline_ns != 0; }
  bool operator==(const PosixTimer&) const = default;
};

// Dispositions, the blocked mask, the alternate stack, the signals pending delivery and the
// interval timer that raises SIGALRM (src/guest/signal_frame.h; the VMM delivers them:
// src/vmm/vm_signals.cc).
struct SignalState {
  static constexpr int kSignals = 64;
  std::array<GuestSigaction, kSignals + 1> actions{};  // index = signal number
  uint64_t blocked = 0;
  GuestStack altstack{};
  // Bit (signal - 1): pending for the process, sent (kill) or a POSIX timer's (a timer whose
  // signal is pending is `queued`; posix_timers.h takes both kinds apart).
  uint64_t pending = 0;
  // Sent to the running thread alone (tgkill, tkill, SIGEV_THREAD_ID timers); the other
  // threads' are in their GuestThread. Delivered as `pending` is.
  uint64_t thread_pending = 0;
  // Index = signal number: the sender of a signal sent otherwise than by a timer.
  std::array<PendingSignalInfo, kSignals + 1> pending_info{};
  IntervalTimer real_timer;
  // timer_create's timers, ascending ids; at most kMaxTimers (then EAGAIN, as Linux when
  // RLIMIT_SIGPENDING is spent).
  static constexpr int kMaxTimers = 256;
  std::vector<PosixTimer> timers;

  // rt_sigsuspend's return: the mask to restore once the signal that ended it is delivered
  // (the handler's frame records it). Set and used within one syscall stop: never captured.
  bool mask_saved = false;
  uint64_t saved_mask = 0;
  // rt_sigsuspend waiting: `suspend_mask` stands for `blocked` in what may interrupt it. Set
  // only within that syscall (a clone made meanwhile makes the syscall again).
  bool suspended = false;
  uint64_t suspend_mask = 0;

  static constexpr uint64_t Bit(int signal) { return 1ULL << (signal - 1); }
  // What the running thread could take: the process's pending signals and its own.
  uint64_t AllPending() const { return pending | thread_pending; }
};

// Register changes a syscall asks for that the VMM applies to the vCPU before resuming.
struct SegmentBases {
  uint64_t fs_base = 0;  // arch_prctl(ARCH_SET_FS): the TLS pointer
  uint64_t gs_base = 0;
  bool dirty = false;  // set by a handler; cleared by the VMM once applied
};

struct GuestState {
  ProcessIdentity identity;
  SegmentBases segment_bases;
  MemoryMap memory_map;
  FdTable fds;
  SignalState signals;
  // The threads besides the running one (whose identity, mask and bases are above).
  ThreadTable threads;
  x86::CpuSignature cpu;
  // The guest's CLOCK_MONOTONIC (and _COARSE, _RAW, BOOTTIME) minus the host's
  // (guest/guest_time.h). 0 in a new VM; set when a VM is made from a descriptor.
  int64_t monotonic_offset_ns = 0;
  // The guest's CLOCK_MONOTONIC when the VM started (sysinfo uptime): guest time, not host time.
  uint64_t start_time_ns = 0;
  // The CPUs the guest is shown (sched_getaffinity): the lanes its threads may run on. Set by
  // the VMM for the host it runs on; not captured.
  int cpus = 1;
};

}  // namespace flurry
