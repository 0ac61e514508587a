#include "fork/clone_family.h"

#include <sys/random.h>

#include <new>

namespace flurry {

Result<CloneFamily> CloneFamily::Create() {
  uint64_t id = 0;
  if (getrandom(&id, sizeof id, 0) != sizeof id) return FailErrno("getrandom for the family id");
  return Continue(id, 1);
}

Result<CloneFamily> CloneFamily::Continue(uint64_t family_id, int32_t first_id) {
  Mapping page = FLURRY_TRY_CTX(Mapping::SharedAnonymous(4096), "creating the clone family page");
  auto* shared = new (page.data()) Shared{family_id, {}, {}};
  shared->next_id.store(first_id);
  pthread_mutexattr_t attributes;
  pthread_mutexattr_init(&attributes);
  pthread_mutexattr_setpshared(&attributes, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attributes, PTHREAD_MUTEX_ROBUST);
  int err = pthread_mutex_init(&shared->output_lock, &attributes);
  pthread_mutexattr_destroy(&attributes);
  if (err != 0) return FailErrno(err, "creating the family output lock");
  return CloneFamily(std::move(page));
}

}  // namespace flurry
