#include "base/parse.h"

#include <charconv>
#include <cmath>
#include <string>

namespace flurry {
namespace {

// Splits "123abc" into the number 123 and the suffix "abc".
Result<std::pair<double, std::string_view>> SplitNumber(std::string_view text) {
  size_t digits = 0;
  while (digits < text.size() &&
         ((text[digits] >= '0' && text[digits] <= '9') || text[digits] == '.')) {
    ++digits;
  }
  if (digits == 0) return Fail("'{}' does not start with a number", text);
  double value = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + digits, value);
  if (ec != std::errc() || ptr != text.data() + digits) return Fail("'{}' is not a number", text);
  return std::pair{value, text.substr(digits)};
}

}  // namespace

Result<uint64_t> ParseSize(std::string_view text) {
  auto [value, suffix] = FLURRY_TRY_CTX(SplitNumber(text), "size");
  uint64_t unit = 1;
  if (suffix.empty() || suffix == "B") {
    unit = 1;
  } else if (suffix == "K" || suffix == "k" || suffix == "KiB" || suffix == "KB") {
    unit = 1ULL << 10;
  } else if (suffix == "M" || suffix == "m" || suffix == "MiB" || suffix == "MB") {
    unit = 1ULL << 20;
  } else if (suffix == "G" || suffix == "g" || suffix == "GiB" || suffix == "GB") {
    unit = 1ULL << 30;
  } else if (suffix == "T" || suffix == "t" || suffix == "TiB" || suffix == "TB") {
    unit = 1ULL << 40;
  } else {
    return Fail("size '{}': unknown unit '{}' (use K, M, G or T)", text, suffix);
  }
  double bytes = value * static_cast<double>(unit);
  if (!std::isfinite(bytes) || bytes >= 18446744073709551615.0) {
    return Fail("size '{}' is too large", text);
  }
  return static_cast<uint64_t>(bytes);
}

Result<std::chrono::milliseconds> ParseDuration(std::string_view text) {
  auto [value, suffix] = FLURRY_TRY_CTX(SplitNumber(text), "duration");
  double ms_per_unit = 0;
  if (suffix.empty() || suffix == "s") {
    ms_per_unit = 1000;
  } else if (suffix == "ms") {
    ms_per_unit = 1;
  } else if (suffix == "m" || suffix == "min") {
    ms_per_unit = 60'000;
  } else if (suffix == "h") {
    ms_per_unit = 3'600'000;
  } else {
    return Fail("duration '{}': unknown unit '{}' (use ms, s, m or h)", text, suffix);
  }
  double ms = value * ms_per_unit;
  if (!std::isfinite(ms) || ms > 1e15) return Fail("duration '{}' is too large", text);
  return std::chrono::milliseconds(static_cast<int64_t>(std::llround(ms)));
}

}  // namespace flurry
