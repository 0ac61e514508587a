// GuestMemory: the guest's RAM and bounds-checked access to it.
//
// Two kinds, one interface:
//  * local: one anonymous mapping in the VMM's own address space (the KVM backend maps the same
//    pages into the guest). Guest address A is host_base() + A.
//  * remote: the RAM lives in another process at the guest's own addresses (the seccomp
//    backend's stub); the VMM reaches it through that process's /proc/PID/mem. Copy-on-write
//    across fork() then comes from the stub's fork, not the VMM's.
//
// Guest virtual == guest physical (see arch/x86_64/layout.h), so every guest pointer is checked
// against the user range [kUserBase, size) before use; a bad pointer yields an error with code
// EFAULT, never a crash.
//
// Owner: the Vm. Thread: the vCPU thread while handling exits.
#pragma once

#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <vector>

#include "base/error.h"
#include "base/mapping.h"
#include "base/unique_fd.h"
#include "memory/lazy_pages.h"
#include "memory/protection_map.h"

namespace flurry {

class GuestMemory;

// What a syscall does with a guest buffer: reads it (write(2)'s data) or writes it (read(2)'s
// target); or the VMM fills it as the kernel does for a new mapping, whatever its protection.
enum class GuestAccess { kRead, kWrite, kAsKernel };

// A host buffer standing for a guest range during one host I/O call: the guest's own bytes
// when the memory is local, a bounce buffer when it is remote. Load() before the host reads
// the buffer (write(2) of guest data); Store(n) after the host filled its first n bytes
// (read(2) into guest memory). Both are no-ops for local memory.
class GuestWindow {
 public:
  std::span<uint8_t> bytes() const { return bytes_; }
  Result<void> Load() const;
  Result<void> Store(uint64_t n) const;

 private:
  friend class GuestMemory;
  const GuestMemory* memory_ = nullptr;
  uint64_t address_ = 0;
  std::span<uint8_t> bytes_;
  std::vector<uint8_t> bounce_;
};

class GuestMemory {
 public:
  // Discards [addr, addr+len) of remote memory (the owning backend asks its process).
  using RemoteDiscard = std::function<Result<void>(uint64_t addr, uint64_t len)>;

  // Maps `size` bytes (a multiple of 2 MiB) of local RAM (4 KiB host pages until advised).
  static Result<GuestMemory> Create(uint64_t size);
  // RAM of `size` bytes at guest addresses in another process; `mem` and `pagemap` are its
  // /proc/PID/mem and /proc/PID/pagemap.
  static GuestMemory Remote(uint64_t size, UniqueFd mem, UniqueFd pagemap, RemoteDiscard discard);

  GuestMemory(GuestMemory&&) = default;
  GuestMemory& operator=(GuestMemory&&) = default;

  // ---- Memory on demand (lazy_pages.h) --------------------------------------------------------
  // From now on pages are installed on first touch; every access below installs the pages it
  // reads first, and a write that covers whole pages installs them from the written bytes.
  void AttachLazy(std::unique_ptr<LazyPages> lazy) { lazy_ = std::move(lazy); }
  bool on_demand() const { return lazy_ != nullptr; }
  // Fetches every page still to fetch, then stops serving faults: the memory is then plain
  // memory (before a fork of the VM or a snapshot). A no-op when not on demand.
  Result<void> Materialize();
  // The on-demand counters (the last ones after Materialize); nullopt if never on demand.
  std::optional<LazyStats> lazy_stats() const;
  // [addr, addr+len) was just allocated to the guest as fresh memory (brk, anonymous mmap): it
  // is zero, and never fetched. A no-op when not on demand.
  void MarkFresh(uint64_t addr, uint64_t len) const;

  bool is_local() const { return !mem_.valid(); }

  // ---- The program's page protections ----------------------------------------------------
  // With a map attached, the checked accesses below behave as Linux's copies to and from user
  // memory: reading needs readable pages, writing writable ones (memory/protection_map.h's
  // PageAccess), EFAULT otherwise. The *Physical calls and Copy ignore it (the VMM's own work
  // and mremap's move). Not owned: the Vm attaches its MemoryMap's before serving each stop.
  void AttachProtections(const ProtectionMap* protections) { protections_ = protections; }

  // Backs [start, start+length) (2 MiB aligned) with transparent huge pages: first touch of
  // big allocations then costs what it does natively. The VMM leaves the small, always
  // touched regions (system area, program image, stack) on 4 KiB pages, so starting a VM
  // does not zero whole 2 MiB pages for a few KiB of data. Failure only costs speed. Local
  // memory only (a stub advises its own).
  void AdviseHugePages(uint64_t start, uint64_t length) const;

  uint64_t size() const { return size_; }
  // Local memory only (CHECKed): where guest address 0 is in the VMM.
  uint8_t* host_base() const;
  // Local memory only (CHECKed): unchecked access for the VMM's own structures (system area,
  // page tables). CHECKs the range.
  uint8_t* HostPointer(uint64_t gpa, uint64_t len) const;

  // Whether [addr, addr+len) lies within user memory (EFAULT otherwise). A zero-length range at
  // any user address (or at `size`) is valid.
  Result<void> CheckUser(uint64_t addr, uint64_t len) const;
  // CheckUser, and whether the program's protections allow `access` to every page of the range.
  Result<void> CheckAccess(uint64_t addr, uint64_t len, GuestAccess access) const;
  // How many bytes from `addr` the protections allow `access` to, up to `len` (a short read or
  // write ends where the program's access does, as on Linux).
  uint64_t AccessibleBytes(uint64_t addr, uint64_t len, GuestAccess access) const;
  // A host buffer for guest user range [addr, addr+len) that the syscall will `access` (see
  // GuestWindow).
  Result<GuestWindow> Window(uint64_t addr, uint64_t len, GuestAccess access) const;

  // Checked access to guest-supplied user ranges.
  Result<void> Read(uint64_t addr, void* dst, uint64_t len) const;
  Result<void> Write(uint64_t addr, const void* src, uint64_t len) const;
  Result<void> Fill(uint64_t addr, uint8_t byte, uint64_t len) const;
  // memmove within user memory, whatever the protections (mremap moving pages).
  Result<void> Copy(uint64_t dst, uint64_t src, uint64_t len) const;
  // A NUL-terminated string of at most max_len bytes (ENAMETOOLONG when longer).
  Result<std::string> ReadCString(uint64_t addr, uint64_t max_len) const;

  // The VMM's own accesses anywhere in [0, size) (system area included): the loader, the vDSO,
  // snapshots. Bounds-checked against size only.
  Result<void> ReadPhysical(uint64_t gpa, void* dst, uint64_t len) const;
  Result<void> WritePhysical(uint64_t gpa, const void* src, uint64_t len) const;

  template <typename T>
  Result<T> ReadObject(uint64_t addr) const {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    FLURRY_TRY(Read(addr, &value, sizeof(T)));
    return value;
  }
  template <typename T>
  Result<void> WriteObject(uint64_t addr, const T& value) const {
    static_assert(std::is_trivially_copyable_v<T>);
    return Write(addr, &value, sizeof(T));
  }

  // Returns [addr, addr+len) to the host (reads as zero afterwards). Range must be page aligned
  // and inside user memory.
  Result<void> Discard(uint64_t addr, uint64_t len) const;

  // Which 4 KiB pages hold data: present in RAM or swapped out (/proc/.../pagemap). Pages the
  // host never populated read as zero. One entry per page of [0, size). Fails on demand (call
  // Materialize first).
  Result<std::vector<bool>> PopulatedPages() const;

 private:
  GuestMemory(Mapping mapping, uint64_t size) : mapping_(std::move(mapping)), size_(size) {}
  Result<void> RemoteTransfer(uint64_t gpa, void* buffer, uint64_t len, bool write) const;
  // The plain copies, without on-demand handling.
  Result<void> RawRead(uint64_t gpa, void* dst, uint64_t len) const;
  Result<void> RawWrite(uint64_t gpa, const void* src, uint64_t len) const;
  Result<void> RawFill(uint64_t gpa, uint8_t byte, uint64_t len) const;
  // On demand: installs whole pages of the range from `src` (zeros when null), the rest after
  // installing what it does not overwrite.
  Result<void> WriteOnDemand(uint64_t gpa, const uint8_t* src, uint8_t fill, uint64_t len) const;

  Mapping mapping_;   // local memory
  UniqueFd mem_;      // remote memory: /proc/PID/mem
  UniqueFd pagemap_;  // remote memory: /proc/PID/pagemap
  RemoteDiscard discard_;
  uint64_t size_ = 0;
  std::unique_ptr<LazyPages> lazy_;
  const ProtectionMap* protections_ = nullptr;
  std::optional<LazyStats> final_lazy_stats_;
};

}  // namespace flurry
