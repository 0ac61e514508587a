#include "fork/clone_family.h"

#include <sys/random.h>

#include <new>

namespace flurry {

Result<CloneFamily> CloneFamily::Create() {
  Mapping page = FLURRY_TRY_CTX(Mapping::SharedAnonymous(4096), "creating the clone family page");
  uint64_t id = 0;
  if (getrandom(&id, sizeof id, 0) != sizeof id) return FailErrno("getrandom for the family id");
  auto* shared = new (page.data()) Shared{id, {}};
  shared->next_id.store(1);
  return CloneFamily(std::move(page));
}

}  // namespace flurry
