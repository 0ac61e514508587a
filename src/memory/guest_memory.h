// GuestMemory: the guest's RAM, one anonymous host mapping, and bounds-checked access to it.
//
// Owner: the Vm. Thread: the vCPU thread reads and writes guest memory while handling exits;
// KVM maps the same pages into the guest. Guest virtual == guest physical (see
// arch/x86_64/layout.h), so every guest pointer is checked against the user range
// [kUserBase, size) before use; a bad pointer yields an error with code EFAULT, never a crash.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#include "base/error.h"
#include "base/mapping.h"

namespace flurry {

class GuestMemory {
 public:
  // Maps `size` bytes (a multiple of 2 MiB) of RAM (4 KiB host pages until advised).
  static Result<GuestMemory> Create(uint64_t size);

  // Backs [start, start+length) (2 MiB aligned) with transparent huge pages: first touch of
  // big allocations then costs what it does natively. The VMM leaves the small, always
  // touched regions (system area, program image, stack) on 4 KiB pages, so starting a VM
  // does not zero whole 2 MiB pages for a few KiB of data. Failure only costs speed.
  void AdviseHugePages(uint64_t start, uint64_t length) const;

  uint64_t size() const { return mapping_.size(); }
  uint8_t* host_base() const { return mapping_.data(); }

  // Unchecked access for the VMM's own structures (system area, loader). CHECKs the range.
  uint8_t* HostPointer(uint64_t gpa, uint64_t len) const;

  // Checked access to guest-supplied user ranges: EFAULT unless [addr, addr+len) lies within
  // user memory. A zero-length range at any user address (or at `size`) is valid.
  Result<std::span<uint8_t>> UserSpan(uint64_t addr, uint64_t len) const;
  Result<void> Read(uint64_t addr, void* dst, uint64_t len) const;
  Result<void> Write(uint64_t addr, const void* src, uint64_t len) const;
  // A NUL-terminated string of at most max_len bytes (ENAMETOOLONG when longer).
  Result<std::string> ReadCString(uint64_t addr, uint64_t max_len) const;

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

 private:
  explicit GuestMemory(Mapping mapping) : mapping_(std::move(mapping)) {}
  Mapping mapping_;
};

}  // namespace flurry
