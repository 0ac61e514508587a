// userfaultfd definitions newer than the build's kernel headers (Debian 12 has Linux 6.1's):
// UFFDIO_MOVE (Linux 6.8) moves pages — a transparent huge page whole — from one place of the
// uffd's address space to a missing range of it.
#pragma once

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>

#include <cstdint>

namespace flurry {

inline constexpr uint64_t kUffdFeatureMove = 1ULL << 16;  // UFFD_FEATURE_MOVE
inline constexpr uint64_t kUffdMoveModeDontWake = 1ULL << 0;

struct UffdioMove {
  uint64_t dst;
  uint64_t src;
  uint64_t len;
  uint64_t mode;
  int64_t move;  // out: bytes moved, or a negative errno
};
static_assert(sizeof(UffdioMove) == 40);

inline constexpr unsigned long kUffdioMove = _IOWR(UFFDIO, 0x05, UffdioMove);

}  // namespace flurry
