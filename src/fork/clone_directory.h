// CloneDirectory: a clone's private copy-on-write view of the guest's writable --dir.
//
// The clone's VMM enters a private mount namespace and mounts an overlay whose lower layer is
// the parent's directory and whose upper layer is an empty directory of its own, so the clone's
// writes never reach the parent's directory or another clone's view. The layers live in
// $TMPDIR/flurry-<family>-<clone> (TMPDIR: an absolute path, else /tmp); the clone removes them
// when it ends, and the parent removes what a killed clone left behind when it joins. Caveat
// (overlayfs): files the clone has not written still show the parent's later changes to them.
#pragma once

#include <cstdint>
#include <string>

#include "base/error.h"

namespace flurry {

class CloneDirectory {
 public:
  static Result<CloneDirectory> Create(const std::string& lower, uint64_t family_id,
                                       int32_t clone_id);
  // The host directory to use as the clone's guest root.
  const std::string& merged() const { return merged_; }
  // Unmounts the view and deletes its layers (best effort; the clone is ending).
  void Remove();

  // The layers' location for a clone (the parent cleans up after killed clones).
  static std::string LayersPath(uint64_t family_id, int32_t clone_id);
  static void RemoveLayers(uint64_t family_id, int32_t clone_id);

 private:
  CloneDirectory(std::string base, std::string merged)
      : base_(std::move(base)), merged_(std::move(merged)) {}
  std::string base_;
  std::string merged_;
};

}  // namespace flurry
