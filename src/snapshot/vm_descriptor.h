// VmDescriptor: the condensed state a clone (or a restored snapshot) starts from — the guest's
// user-visible CPU state, the VMM-side guest state, the memory layout and a map of which guest
// pages hold data — but not the memory itself. Kilobytes, not the memory image. Plain data;
// encoded as described in docs/formats/descriptor.md (descriptor_codec.h). Backend-neutral: no
// KVM (or other backend) state, so a descriptor captured by one execution backend restores on
// another.
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "arch/x86_64/cpu_signature.h"
#include "arch/x86_64/user_cpu_state.h"
#include "guest/guest_state.h"
#include "guest/guest_time.h"
#include "guest/process_record.h"
#include "memory/protection_map.h"

namespace flurry {

// One guest fd as it can be reopened in a new VMM.
// One fd of an epoll instance's interest list (guest/fd_table.h EpollInterest).
struct EpollInterestRecord {
  int32_t fd = -1;  // a guest fd of the same table, not an epoll instance's own
  uint32_t events = 0;
  uint64_t data = 0;

  bool operator==(const EpollInterestRecord&) const = default;
};

// kEventfd, kTimerfd, kEpoll: the object's state at capture time.
struct EventRecord {
  uint64_t count = 0;      // eventfd: its counter; timerfd: expirations not yet read
  bool semaphore = false;  // eventfd: EFD_SEMAPHORE
  int32_t clock = 0;       // timerfd: CLOCK_REALTIME, CLOCK_MONOTONIC or CLOCK_BOOTTIME
  // timerfd: its next expiration on its clock as the guest reads it (the guest's monotonic
  // clock carries the VM's offset; REALTIME is the host's), 0: disarmed. Absolute, so that a
  // VM made from the descriptor later (a checkpoint's clone) finds the expirations missed.
  int64_t deadline_ns = 0;
  int64_t interval_ns = 0;                     // timerfd: its period (0: one-shot)
  std::vector<EpollInterestRecord> interests;  // epoll
  uint64_t signal_mask = 0;                    // signalfd: the signals it reads

  bool operator==(const EventRecord&) const = default;
};

struct FdRecord {
  int32_t fd = -1;
  FileKind kind = FileKind::kOther;
  int32_t stdio_fd = -1;  // kStdio: host fd 0, 1 or 2
  std::string path;       // guest path (absolute) for files and directories
  int32_t flags = 0;      // guest open flags
  bool cloexec = false;
  int64_t offset = 0;  // file position at capture time
  EventRecord event;   // kEventfd, kTimerfd, kEpoll, kSignalfd
  // The lower fd whose open file this one shares (dup, dup2, /dev/fd/N), -1: its own. A
  // restore makes one open file of them again (one offset, one eventfd, one pipe end).
  int32_t shares_with = -1;
  // kPipe: which pipe of FilesRecord::pipes this is an end of; 0: a pipe end recorded without
  // its pipe (descriptors written before pipes were kept), restored without a peer.
  uint64_t pipe = 0;
};

// A pipe of the guest's as it stood at capture time: the bytes written and not yet read. Its
// ends are the FdRecords naming it. A restore makes one new pipe of them, with these bytes.
struct PipeRecord {
  uint64_t id = 0;                                        // >= 1, unique in the descriptor
  uint32_t capacity = 0;                                  // F_GETPIPE_SZ: 4096 .. kMaxPipeCapacity
  std::vector<uint8_t> contents;                          // at most capacity bytes
  static constexpr uint32_t kMaxPipeCapacity = 1U << 20;  // Linux's default pipe-max-size

  bool operator==(const PipeRecord&) const = default;
};

// Where the guest's files live (restoring reopens paths under the same host directory).
struct FilesRecord {
  std::optional<std::string> root_host_path;  // --dir, if any
  bool root_writable = false;
  std::string cwd = "/";
  std::vector<FdRecord> fds;
  std::vector<PipeRecord> pipes;  // the pipes the fds are ends of
};

// The memory map's fields (guest/memory_map.h).
struct MemoryLayoutRecord {
  uint64_t ram_size = 0;
  uint64_t image_start = 0;
  uint64_t image_end = 0;
  uint64_t brk_start = 0;
  uint64_t brk = 0;
  uint64_t mmap_top = 0;
  uint64_t stack_bottom = 0;
  std::map<uint64_t, uint64_t> regions;  // start -> length
  // Page protections (memory/protection_map.h): start -> span. nullopt in descriptors made
  // before they were kept: every mapped page is then readable, writable and executable.
  std::optional<std::map<uint64_t, ProtectionMap::Span>> protections;
};

// Which 4 KiB guest pages hold data (were ever written and not discarded). Pages outside
// every run read as zero and never need to be fetched. Sorted, non-overlapping runs.
struct PageMapRecord {
  struct Run {
    uint64_t first_page = 0;
    uint64_t page_count = 0;
  };
  std::vector<Run> present;
  uint64_t PresentPages() const;
};

// Who this VM is in its clone family.
struct CloneIdentityRecord {
  uint64_t family_id = 0;  // random, shared by a parent and all its descendants
  int32_t clone_id = 0;    // 0 = the original VM; 1.. = clones (sf_clone's return value)
};

// A thread besides the running one (guest/thread_table.h), runnable: one that waited in a
// syscall stands on its `syscall` instruction, to make it again.
struct ThreadRecord {
  int32_t tid = 0;
  x86::UserCpuState cpu;
  uint64_t clear_child_tid = 0;
  uint64_t robust_list = 0;
  uint64_t robust_list_len = 0;
  uint64_t blocked = 0;
  uint64_t thread_pending = 0;
  GuestStack altstack{};

  bool operator==(const ThreadRecord&) const = default;
};

// The processes of a VM of several processes, in the descriptor of its init (the VM's first
// process): the process table, and the pipes between them with their bytes (the processes'
// own descriptors record those pipes empty). Each running process other than init has a
// descriptor of its own (docs/formats/snapshot.md).
struct ProcessesRecord {
  static constexpr int kMaxProcesses = 512;  // ProcessTable::kMaxProcesses
  std::vector<ProcessRecord> processes;      // init first
  int32_t last_id = 0;                       // the newest pid or tid handed out
  std::vector<PipeRecord> pipes;

  bool operator==(const ProcessesRecord&) const = default;
};

struct VmDescriptor {
  // The format EncodeDescriptor writes. DecodeDescriptor also reads version 1 (flurry before
  // format version 2), converting it (docs/formats/descriptor.md, "Format version 1").
  static constexpr uint32_t kFormatVersion = 2;
  // The format of a descriptor that carries `processes` (version 2 plus that field): a reader
  // that does not know it would restore one process of several, so it must refuse the file.
  static constexpr uint32_t kFormatVersionProcesses = 3;

  x86::CpuSignature cpu;
  // The execution backend that captured the state ("kvm", "seccomp"); empty if unknown.
  // Informational only (shown by `flurry descriptor show`): never a reason to refuse a restore.
  std::string backend;
  // The guest's user-visible CPU state, FS/GS bases included (vcpu.regs.fs_base/gs_base).
  x86::UserCpuState vcpu;
  ProcessIdentity identity;
  MemoryLayoutRecord memory;
  FilesRecord files;
  SignalState signals;
  uint64_t start_time_ns = 0;  // the guest's CLOCK_MONOTONIC when the VM started
  // The guest's CLOCK_MONOTONIC and the host's CLOCK_REALTIME at the capture instant. Absent in
  // descriptors written before flurry recorded it: a VM restored from one reads the host's
  // monotonic clock (offset 0), as flurry did then.
  std::optional<ClockCapture> clock;
  PageMapRecord pages;
  CloneIdentityRecord clone;
  // The other threads (the running one is vcpu/identity/signals), and the newest tid made.
  std::vector<ThreadRecord> threads;
  int32_t last_tid = 0;
  // A VM of several processes, in its init's descriptor; absent for one process, and in the
  // descriptors of the other processes.
  std::optional<ProcessesRecord> processes;
};

}  // namespace flurry
