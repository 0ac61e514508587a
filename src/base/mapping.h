// Mapping: owns one mmap()ed region; munmaps it on destruction. Move-only.
#pragma once

#include <cstddef>
#include <cstdint>
#include <utility>

#include "base/error.h"

namespace flurry {

class Mapping {
 public:
  Mapping() = default;
  ~Mapping() { Reset(); }
  Mapping(Mapping&& other) noexcept
      : data_(std::exchange(other.data_, nullptr)), size_(std::exchange(other.size_, 0)) {}
  Mapping& operator=(Mapping&& other) noexcept {
    if (this != &other) {
      Reset();
      data_ = std::exchange(other.data_, nullptr);
      size_ = std::exchange(other.size_, 0);
    }
    return *this;
  }
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;

  // Private anonymous memory, reserved lazily (MAP_NORESERVE).
  static Result<Mapping> Anonymous(size_t size);
  // Anonymous memory shared with processes forked later (MAP_SHARED).
  static Result<Mapping> SharedAnonymous(size_t size);
  // A mapping of `fd` (e.g. a vCPU's kvm_run area).
  static Result<Mapping> Shared(int fd, size_t size, int prot);
  // The first `size` bytes of file `fd`, read-only and private, populated at once. Reading past
  // the end of a file that shrank afterwards raises SIGBUS: for files nobody else writes.
  static Result<Mapping> ReadOnlyFile(int fd, size_t size);

  uint8_t* data() const { return static_cast<uint8_t*>(data_); }
  size_t size() const { return size_; }
  void Reset();

 private:
  Mapping(void* data, size_t size) : data_(data), size_(size) {}
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace flurry
