#include "memory/huge_stage.h"

#include <sys/mman.h>

#include <cstring>
#include <memory>

#include "base/mapping.h"

namespace flurry {

Result<HugeStage> LocalHugeStage() {
  constexpr uint64_t kHuge = 2ULL << 20;
  // Twice the size, to find 2 MiB aligned inside.
  auto mapping = std::make_shared<Mapping>(
      FLURRY_TRY_CTX(Mapping::Anonymous(2 * kHuge), "mapping the huge page stage"));
  const auto base = reinterpret_cast<uint64_t>(mapping->data());
  const uint64_t aligned = (base + kHuge - 1) & ~(kHuge - 1);
  (void)madvise(reinterpret_cast<void*>(aligned), kHuge, MADV_HUGEPAGE);
  HugeStage stage;
  stage.host_address = aligned;
  stage.fill = [mapping, aligned](const uint8_t* data) -> Result<void> {
    std::memcpy(reinterpret_cast<void*>(aligned), data, kHuge);
    return {};
  };
  return stage;
}

}  // namespace flurry
