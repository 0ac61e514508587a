// Backend: the seam between flurry's VMM (syscall layer, guest state, fork, snapshots, the API)
// and the one thing that differs between execution backends — running the guest's code until
// it needs the VMM. See docs/design.md ("Execution backends").
//
// A backend owns the guest's address space (GuestMemory), loads and reports the guest's user
// CPU state (x86::UserCpuState), runs the guest until a syscall, a fault or an interruption,
// and makes the copy-on-write copies of itself that VM fork needs. Everything above it is
// shared: a new backend is one folder under src/backend/ plus a line in backend_select.cc.
//
// Lanes: a backend runs the guest's threads on one or more *lanes* (execution contexts: a stub
// thread, a vCPU) at once; see "Lanes" below. Every per-CPU call acts on the selected lane.
//
// Threads: everything on the VM's run thread, except Interrupt() (any thread).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "arch/x86_64/exceptions.h"
#include "arch/x86_64/user_cpu_state.h"
#include "base/error.h"
#include "memory/guest_memory.h"
#include "memory/huge_stage.h"
#include "memory/protection_map.h"

namespace flurry {

// Why Backend::Run returned.
struct GuestStop {
  enum class Kind {
    kSyscall,      // regs(): RAX = syscall number, RIP past the syscall instruction
    kFault,        // the guest faulted; the fields below say how
    kInterrupted,  // Interrupt() was called (or a host signal interrupted the wait)
  };
  explicit GuestStop(Kind k) : kind(k) {}

  Kind kind;
  int lane = 0;  // the lane that stopped (Backend::Run selected it)
  // kFault: how far RIP moves back so that running again stops the same way (a trap that
  // reports the next instruction: `int3`, `int 0x80`); 0: it stands on the faulting
  // instruction (or the backend cannot tell).
  int replay_back = 0;
  int vector = -1;          // kFault: x86 exception vector (-1: none applies)
  int signal = 0;           // kFault: the signal a native process would get
  std::string description;  // kFault: one line, e.g. "page fault at rip 0x401000, ..."
  // kFault with vector >= 0: the exception as the guest met it (rip, rsp, CR2, error code):
  // what a signal handler is told (si_code, si_addr, the sigcontext's trapno/err/cr2).
  x86::FaultReport report;
};

// The memory layout a backend needs to create a guest address space.
struct GuestLayout {
  uint64_t ram_size = 0;
  uint64_t huge_start = 0;  // [huge_start, huge_end): transparent huge pages (heap, mmap area)
  uint64_t huge_end = 0;
  uint64_t guard_start = 0;  // a 2 MiB hole below the stack: touching it faults
  // Guest RAM will be filled on demand (memory/lazy_pages.h): the backend must be able to hand
  // out a userfaultfd of the address space that holds it (Backend::TakeUserfault).
  bool on_demand = false;
};

class Backend {
 public:
  virtual ~Backend() = default;

  virtual const char* name() const = 0;  // "kvm", "seccomp"

  // The guest's RAM (valid for the backend's lifetime; replaced by BecomeForkChild).
  virtual GuestMemory& memory() = 0;

  // Makes the guest start at `state` (after the loader filled memory): registers, FS/GS bases,
  // FPU state (empty xsave: the initial state).
  virtual Result<void> LoadCpu(const x86::UserCpuState& state) = 0;

  // Runs the guest until it needs the VMM.
  virtual Result<GuestStop> Run() = 0;

  // The guest's registers at the last stop. At a kSyscall stop they read as Linux shows them
  // at syscall entry: RIP past the `syscall` instruction, RCX = RIP, R11 = RFLAGS.
  virtual x86::UserRegs& regs() = 0;
  // Finishes the syscall of a kSyscall stop: the guest resumes past it with RAX = `rax` and
  // whatever else the VMM changed in regs() (FS/GS bases included).
  virtual void CompleteSyscall(uint64_t rax) = 0;
  // The FS/GS bases changed (arch_prctl): apply regs().fs_base/gs_base before resuming.
  virtual void MarkSegmentBasesDirty() = 0;

  // Makes the guest's access to user pages [start, start+length) (page aligned) what
  // `protections` says (PageAccess: none for unmapped and PROT_NONE pages), before the guest
  // runs again. Called with every range the VMM changed, and with all of user memory when a
  // VM is made or restored (a backend starts with every user page accessible).
  virtual Result<void> Protect(const ProtectionMap& protections, uint64_t start,
                               uint64_t length) = 0;

  // The full user CPU state as it stands (registers, FS/GS bases, XCR0, XSAVE image).
  virtual Result<x86::UserCpuState> CaptureCpu() = 0;

  // Any thread: makes the current or next Run() return kInterrupted soon.
  virtual void Interrupt() = 0;

  // The guest TSC relative to the host's and its frequency in kHz (0: unknown), for the
  // vDSO's clock page.
  struct TscInfo {
    int64_t guest_minus_host = 0;
    uint64_t khz = 0;
  };
  virtual Result<TscInfo> Tsc() = 0;

  // ---- Lanes: guest threads running in parallel ---------------------------------------------
  // A lane is one execution context. A backend starts with lane 0 only; AddLane() makes another
  // (up to max_lanes() in all). Lanes are numbered in [0, max_lanes()); after a fork the child
  // has only the lane that was selected, under the same number.
  //
  // LoadCpu, regs, CompleteSyscall, MarkSegmentBasesDirty and CaptureCpu act on the selected
  // lane (Select); so do the backend's own commands to the guest's address space (Protect,
  // memory discards, PrepareFork), which need the selected lane stopped, and act for the
  // whole address space. A lane is *active* from LoadCpu until SetIdle(lane). Run() resumes
  // every active lane that is stopped (with what LoadCpu and CompleteSyscall gave it), then
  // waits until any active lane stops, selects it and returns its stop (GuestStop::lane). A
  // stop that came while the VMM served another is returned by the next Run() without waiting
  // (round robin over the lanes). At least one lane must be active when Run() is called.
  //
  // Interrupt() stops one running lane (kInterrupted) soon; if none runs, the next lane to
  // run stops at once. To stop them all, call it again after each stop until none runs.
  // InterruptLane(lane) (run thread only) stops that lane if it runs. A kick may cause one
  // spurious kInterrupted stop later.
  virtual int max_lanes() const { return 1; }
  virtual void InterruptLane(int lane) {
    (void)lane;
    Interrupt();
  }
  virtual bool LaneExists(int lane) const { return lane == 0; }
  // Any thread: stops `lane` soon if it runs; nothing if it has stopped and its stop is still
  // to be returned; else does what Interrupt() does. (The VMM's alarm stops the lane whose
  // thread's time slice ended, not whichever lane runs.) By default: Interrupt().
  virtual void InterruptAimed(int lane) {
    (void)lane;
    Interrupt();
  }
  // How long `lane` stood stopped before its last run began, from the end of the run before
  // (host ns): after a thread switch, what the switch cost the lane. -1: not known (the
  // backend does not measure it, or the lane has run once or never).
  virtual int64_t LaneStoppedNs(int lane) const {
    (void)lane;
    return -1;
  }
  // Makes a new lane (stopped, idle) and returns its number. A backend may refuse (the VMM then
  // runs on the lanes it has): seccomp adds lanes only in one batch, from a lone lane, before
  // any lane runs again (Run() ends the batch), until EndOtherLanes().
  virtual Result<int> AddLane() { return Fail("this backend runs one lane"); }
  // Ends every lane but the selected one (each must be stopped: idle, or its stop returned).
  // Afterwards the stub has one thread again; new lanes can be added (in one batch) and forks
  // made. (Seccomp: only from lane 0, the stub's main thread; PrepareFork needs one lane.)
  virtual Result<void> EndOtherLanes() { return {}; }
  virtual void Select(int lane) { (void)lane; }
  virtual int selected() const { return 0; }
  // The lane gets no thread: Run() leaves it stopped until its next LoadCpu.
  virtual void SetIdle(int lane) { (void)lane; }
  // Whether the lane is active and running guest code (not stopped, or stopped with its stop
  // not yet returned).
  virtual bool LaneRunning(int lane) const {
    (void)lane;
    return false;
  }
  // Waits until a running lane stops, without resuming any lane; selects it and returns its
  // stop (nullopt: no lane runs). The VMM stops every lane so: Interrupt(), then
  // WaitRunning(), until none runs.
  virtual Result<std::optional<GuestStop>> WaitRunning() { return std::nullopt; }

  // ---- Memory on demand ---------------------------------------------------------------------
  // Created with GuestLayout::on_demand: a userfaultfd (UFFDIO_API not done yet) of the address
  // space that holds guest RAM — the VMM's own (KVM) or the stub's (seccomp) — once. Faults in
  // it are user-mode faults of the guest and, with KVM, the vCPU's accesses.
  virtual Result<UniqueFd> TakeUserfault() = 0;
  // Where guest address 0 is in that address space.
  virtual uint64_t ram_host_base() = 0;
  // A staging area for huge pages in that address space (memory/huge_stage.h); none (the
  // default) makes every install of fetched memory one of 4 KiB pages. The seccomp backend has
  // none: the kernel moves pages (UFFDIO_MOVE) only for a caller in the uffd's own address
  // space, and the stub's is not the VMM's.
  virtual Result<HugeStage> MakeHugeStage() { return HugeStage{}; }

  // ---- VM fork ----------------------------------------------------------------------------
  // Around every fork() of the VMM process that makes a snapshot process or a clone:
  // PrepareFork() readies a copy-on-write copy of the guest's address space for the new
  // process (a no-op where fork() of the VMM copies guest memory itself), then exactly one of
  // the others runs on each side: the parent keeps what it had, the child switches to the copy.
  // Failure of PrepareFork leaves the backend as it was. With `tied_to_parent` the copy ends
  // when this process's guest does (as the forked VMM dies with this one); detached clones
  // outlive it.
  virtual Result<void> PrepareFork(bool tied_to_parent) = 0;
  // `child_exists`: false when fork() itself failed (the copy is thrown away).
  virtual void AfterForkInParent(bool child_exists) = 0;
  virtual Result<void> AfterForkInChild() = 0;
  // In a process that will run a clone: rebuild whatever cannot cross fork() (KVM: the VM and
  // vCPU) and load `state`.
  virtual Result<void> BecomeClone(const x86::UserCpuState& state) = 0;
};

enum class BackendKind { kAuto, kKvm, kSeccomp };

// "auto", "kvm", "seccomp" (EINVAL otherwise).
Result<BackendKind> ParseBackendKind(const std::string& text);
// kAuto: KVM when /dev/kvm can be opened read/write, else seccomp.
BackendKind ResolveBackendKind(BackendKind kind);
// Why KVM can't be used here ("" when it can).
std::string KvmUnavailableReason();

// Parts of a backend made before the guest's layout is known: a clone VMM started ahead of its
// clone (`flurry clone-vmm`) makes them while it waits, so that its clone does not wait for
// them. Opaque; CreateBackend uses them when they are of the kind it creates.
class PreparedBackend {
 public:
  virtual ~PreparedBackend() = default;
};

// The parts `kind` can make ahead (KVM: the VM and its first vCPU set up, and with `ram_bytes`
// a guest memory of that size in the VM); nullptr when the backend has nothing to make ahead
// (seccomp).
Result<std::unique_ptr<PreparedBackend>> PrepareBackend(BackendKind kind, uint64_t ram_bytes = 0);

// Creates a backend with an empty guest address space of layout.ram_size bytes, from
// `prepared` where they fit (else they are dropped).
Result<std::unique_ptr<Backend>> CreateBackend(BackendKind kind, const GuestLayout& layout,
                                               std::unique_ptr<PreparedBackend> prepared = nullptr);

}  // namespace flurry
