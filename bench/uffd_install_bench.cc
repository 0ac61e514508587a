// What installing fetched memory costs a guest that then scans it (docs/perf.md): 256 MiB of
// data put into a userfaultfd-registered region, then read once, then read again, by one of
//   copy:  UFFDIO_COPY in 2 MiB calls (4 KiB pages: what memory on demand does in general);
//   move:  each 2 MiB written to a staging area advised for huge pages, then UFFDIO_MOVE'd
//          (one transparent huge page: the readahead stream's huge regions, KVM, Linux 6.8+).
// The first scan pays for the pages' first touch (TLB fills; on a PVM host, shadow page table
// fills), the second does not.
//   build/bench/uffd_install_bench [MIB]   (default 256)
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "base/mapping.h"
#include "memory/uffd_compat.h"

namespace {

constexpr uint64_t kHuge = 2ULL << 20;

double Ms(std::chrono::steady_clock::time_point since) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - since)
      .count();
}

uint64_t Scan(const uint8_t* p, uint64_t size) {
  uint64_t sum = 0;
  for (uint64_t i = 0; i < size; i += 64) sum += p[i];
  return sum;
}

uint8_t* Aligned(flurry::Mapping& m) {
  return reinterpret_cast<uint8_t*>((reinterpret_cast<uint64_t>(m.data()) + kHuge - 1) &
                                    ~(kHuge - 1));
}

int Run(bool move, uint64_t size) {
  auto ram_mapping = flurry::Mapping::Anonymous(size + kHuge);
  auto stage_mapping = flurry::Mapping::Anonymous(2 * kHuge);
  if (!ram_mapping || !stage_mapping) return 1;
  uint8_t* ram = Aligned(*ram_mapping);
  uint8_t* stage = Aligned(*stage_mapping);
  madvise(ram, size, MADV_HUGEPAGE);
  madvise(stage, kHuge, MADV_HUGEPAGE);
  std::vector<uint8_t> data(kHuge);
  for (uint64_t i = 0; i < kHuge; ++i) data[i] = static_cast<uint8_t>(i * 7 + 1);

  const int uffd = static_cast<int>(syscall(SYS_userfaultfd, O_CLOEXEC));
  uffdio_api api{};
  api.api = UFFD_API;
  api.features = move ? flurry::kUffdFeatureMove : 0;
  if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) != 0) {
    std::printf("%s: not supported here (%s)\n", move ? "move" : "copy", strerror(errno));
    return 0;
  }
  uffdio_register reg{};
  reg.range = {reinterpret_cast<uint64_t>(ram), size};
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  if (ioctl(uffd, UFFDIO_REGISTER, &reg) != 0) return 1;

  const auto start = std::chrono::steady_clock::now();
  for (uint64_t off = 0; off < size; off += kHuge) {
    if (move) {
      std::memcpy(stage, data.data(), kHuge);
      flurry::UffdioMove m{reinterpret_cast<uint64_t>(ram + off), reinterpret_cast<uint64_t>(stage),
                           kHuge, 0, 0};
      if (ioctl(uffd, flurry::kUffdioMove, &m) != 0) {
        std::printf("move: UFFDIO_MOVE failed: %s\n", strerror(errno));
        return 1;
      }
    } else {
      uffdio_copy c{reinterpret_cast<uint64_t>(ram + off), reinterpret_cast<uint64_t>(data.data()),
                    kHuge, 0, 0};
      if (ioctl(uffd, UFFDIO_COPY, &c) != 0) return 1;
    }
  }
  const double install = Ms(start);
  const auto first = std::chrono::steady_clock::now();
  const uint64_t a = Scan(ram, size);
  const double scan1 = Ms(first);
  const auto second = std::chrono::steady_clock::now();
  const uint64_t b = Scan(ram, size);
  const double scan2 = Ms(second);
  std::printf("%s: MiB=%lu install_ms=%.1f first_scan_ms=%.1f second_scan_ms=%.1f%s\n",
              move ? "move" : "copy", static_cast<unsigned long>(size >> 20), install, scan1, scan2,
              a == b ? "" : " (sums differ!)");
  close(uffd);
  return a == b ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const uint64_t mib = argc > 1 ? std::strtoull(argv[1], nullptr, 10) : 256;
  const uint64_t size = (mib << 20) & ~(kHuge - 1);
  if (size == 0) return 2;
  for (int round = 0; round < 3; ++round) {
    if (Run(false, size) != 0 || Run(true, size) != 0) return 1;
  }
  return 0;
}
