// Parsers for command-line quantities.
#pragma once

#include <chrono>
#include <cstdint>
#include <string_view>

#include "base/error.h"

namespace flurry {

// "512M", "1G", "4096", "64K", "2GiB", "256MiB": bytes. Suffixes are binary (K = 1024).
Result<uint64_t> ParseSize(std::string_view text);

// "10s", "500ms", "2m", "1h", "30" (seconds), "1.5s".
Result<std::chrono::milliseconds> ParseDuration(std::string_view text);

}  // namespace flurry
