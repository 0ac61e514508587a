// Converting between the live VMM-side guest state (GuestState, GuestMemory) and the plain-data
// VmDescriptor records — the guest half of capturing and restoring a VM.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "base/error.h"
#include "guest/guest_state.h"
#include "guest/lazy_files.h"
#include "memory/guest_memory.h"
#include "snapshot/pipe_contents.h"
#include "snapshot/vm_descriptor.h"

namespace flurry {

// Captures everything but the CPU state (the caller fills descriptor.vcpu — FS/GS bases
// included: GuestState::segment_bases is not copied, so a pending (dirty) arch_prctl must be
// applied to the vCPU, or folded into vcpu.regs, before capturing), the backend name and the
// clone identity. The clock record is read now: call at the capture instant. The page map comes
// from GuestMemory::PopulatedPages (pagemap: present or swapped out); pages the host never
// populated read as zero.
Result<VmDescriptor> CaptureGuest(const GuestState& state, const GuestMemory& memory);

// CaptureGuest without the page map (for a clone whose memory is this process's copy).
Result<VmDescriptor> CaptureGuestState(const GuestState& state);
// CaptureGuestState without the files either (for a caller that captured them at an earlier
// instant).
VmDescriptor CaptureGuestStateExceptFiles(const GuestState& state);

// The page map alone (also used by benchmarks).
Result<PageMapRecord> CapturePageMap(const GuestMemory& memory);

// Rebuilds a GuestState from a descriptor: reopens the --dir root (optionally at another host
// path, e.g. a clone's private copy-on-write view) and every file at its recorded offset.
// stdio fds map to the host's stdio. segment_bases mirrors descriptor.vcpu.regs.fs_base/gs_base,
// not dirty (restoring the CPU state sets them). The guest's monotonic clock continues from the
// descriptor's capture instant as `clock` says (RestoredMonotonicOffset), or at
// `monotonic_offset_ns` from the host's where that is given. `lazy_files`: the
// root holds placeholders that it fills as they are opened (a remote clone's copy of its
// parent's --dir).
Result<GuestState> RestoreGuest(const VmDescriptor& descriptor, ClockResume clock,
                                const std::optional<std::string>& root_override = std::nullopt,
                                std::shared_ptr<LazyFiles> lazy_files = nullptr,
                                const PipeSet* pipes = nullptr,
                                std::optional<int64_t> monotonic_offset_ns = std::nullopt);

// The GuestState::monotonic_offset_ns for a VM made from `descriptor` now: per `how` from its
// clock record, or 0 (the host's clock) when the descriptor has none (older writers).
int64_t RestoredMonotonicOffset(const VmDescriptor& descriptor, ClockResume how);

// `pipes`: the pipes the record's pipe ends are ends of, made already (a clone of a VM of
// several processes); by default each recorded pipe is made with its recorded bytes.
// Reopens the files of `record` into `fds` (used by RestoreGuest and by clones, whose inherited
// host fds would otherwise share file offsets with the parent), for a VM whose monotonic
// clocks read `monotonic_offset_ns` ahead of the host's (timerfd deadlines).
Result<void> RestoreFiles(const FilesRecord& record, const std::optional<std::string>& root_path,
                          FdTable& fds, std::shared_ptr<LazyFiles> lazy_files,
                          int64_t monotonic_offset_ns, const PipeSet* pipes = nullptr);

// The files of a VM whose monotonic clocks read `monotonic_offset_ns` ahead of the host's,
// with the bytes in its pipes (copied: the pipes keep them).
// Without `pipe_bytes` the pipes are recorded empty (a caller that takes their bytes itself,
// at another instant: a clone of a VM of several processes).
Result<FilesRecord> CaptureFiles(const FdTable& fds, int64_t monotonic_offset_ns,
                                 bool pipe_bytes = true);

}  // namespace flurry
