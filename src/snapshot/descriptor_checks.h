// Internal to the descriptor codec: the error helpers and constants its translation units share.
#pragma once

#include <bit>
#include <csignal>
#include <cstddef>
#include <string_view>

#include "arch/x86_64/layout.h"
#include "arch/x86_64/user_cpu_state.h"
#include "base/error.h"
#include "snapshot/descriptor_codec.h"

namespace flurry::descriptor_internal {

static_assert(std::endian::native == std::endian::little,
              "the descriptor header is little-endian and copied as-is");

using x86::kPageSize;

inline constexpr int kMaxSignal = SignalState::kSignals;
inline constexpr int kMaxThreads = 1024;  // threads besides the running one
inline constexpr uint64_t kUnblockableSignals = (1ULL << (SIGKILL - 1)) | (1ULL << (SIGSTOP - 1));

inline std::unexpected<Error> Invalid(std::string_view message) {
  return std::unexpected(Error(0, fmt::format("invalid descriptor: {}", message)));
}
template <typename... Args>
std::unexpected<Error> Invalid(fmt::format_string<Args...> format, Args&&... args) {
  return Invalid(std::string_view(fmt::format(format, std::forward<Args>(args)...)));
}

inline std::unexpected<Error> Missing(std::string_view what) { return Invalid("missing {}", what); }

// The XSAVE image size rule (x86::UserCpuState): empty, or kMinXsaveBytes..kMaxXsaveBytes in
// multiples of 8. (An image ends where the host's last enabled component does, which need not
// be a multiple of 64: 2440 bytes on an AMD CPU with PKRU, 8 bytes at offset 2432, as the
// kernel's signal frames carry it.) Checked before the image is copied out of a protobuf
// message, and again by ValidateDescriptor.
inline Result<void> CheckXsaveSize(uint64_t size) {
  using x86::UserCpuState;
  if (size == 0) return {};
  if (size < UserCpuState::kMinXsaveBytes || size > UserCpuState::kMaxXsaveBytes || size % 8 != 0) {
    return Invalid("xsave area is {} bytes (valid: 0, or {}..{} in multiples of 8)", size,
                   UserCpuState::kMinXsaveBytes, UserCpuState::kMaxXsaveBytes);
  }
  return {};
}

inline Result<void> CheckRamSize(uint64_t ram_size) {
  if (ram_size % x86::kHugePageSize != 0 || ram_size < x86::kMinRamSize ||
      ram_size > x86::kMaxRamSize) {
    return Invalid("ram size {:#x} is not a multiple of 2 MiB in [{} MiB, {} GiB]", ram_size,
                   x86::kMinRamSize >> 20, x86::kMaxRamSize >> 30);
  }
  return {};
}

}  // namespace flurry::descriptor_internal
