#include "fork/clone_directory.h"

#include <sched.h>
#include <sys/mount.h>

#include <cstdlib>
#include <filesystem>

namespace flurry {

namespace fs = std::filesystem;

std::string CloneDirectory::LayersPath(uint64_t family_id, int32_t clone_id) {
  const char* tmp = std::getenv("TMPDIR");
  return fmt::format("{}/flurry-{:016x}-{}", tmp != nullptr && tmp[0] == '/' ? tmp : "/tmp",
                     family_id, clone_id);
}

void CloneDirectory::RemoveLayers(uint64_t family_id, int32_t clone_id) {
  std::error_code ignored;
  fs::remove_all(LayersPath(family_id, clone_id), ignored);
}

Result<CloneDirectory> CloneDirectory::Create(const std::string& lower, uint64_t family_id,
                                              int32_t clone_id) {
  const std::string base = LayersPath(family_id, clone_id);
  std::error_code error;
  fs::remove_all(base, error);
  for (const char* sub : {"upper", "work", "merged"}) {
    if (!fs::create_directories(fs::path(base) / sub, error)) {
      return FailErrno(error.value(), fmt::format("creating {}/{}", base, sub));
    }
  }
  if (unshare(CLONE_NEWNS) != 0) return FailErrno("entering a private mount namespace");
  if (mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) {
    return FailErrno("making mounts private");
  }
  const std::string merged = base + "/merged";
  const std::string options =
      fmt::format("lowerdir={},upperdir={}/upper,workdir={}/work", lower, base, base);
  if (mount("overlay", merged.c_str(), "overlay", 0, options.c_str()) != 0) {
    int err = errno;
    fs::remove_all(base, error);
    return FailErrno(err, fmt::format("mounting a copy-on-write view of {}", lower));
  }
  return CloneDirectory(base, merged);
}

void CloneDirectory::Remove() {
  umount2(merged_.c_str(), MNT_DETACH);
  std::error_code ignored;
  fs::remove_all(base_, ignored);
}

}  // namespace flurry
