// Small-file helpers (cluster files, credentials, VM descriptors): reading a file under a size cap
// (optionally refusing one that group or others may access) and writing one atomically (temporary
// file + rename, or
// + link when the name must not exist yet).
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "base/error.h"

namespace flurry {

struct ReadLimits {
  size_t max_bytes = 0;
  // Refuse the file when its mode grants group or others any access (private keys).
  bool require_private = false;
};

// Reads a whole regular file of at most `limits.max_bytes` bytes.
Result<std::string> ReadSmallFile(const std::string& path, ReadLimits limits);

// Writes `content` to a temporary file next to `path` with `mode`, fsyncs it and moves it into
// place. exclusive: the file must not exist yet (link(2), so the name appears complete or not at
// all and a concurrent writer loses with EEXIST); otherwise an existing file is replaced.
Result<void> WriteFileAtomic(const std::string& path, std::string_view content, mode_t mode,
                             bool exclusive);

// The directory part of `path` ("." when it has none).
std::string DirectoryOf(const std::string& path);

}  // namespace flurry
