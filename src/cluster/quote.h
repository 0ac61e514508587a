// Quote(): a string for an error message, JSON-quoted (control characters and invalid UTF-8
// escaped or replaced) and cut after 64 bytes, so hostile input cannot flood or garble a message.
#pragma once

#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

namespace flurry::cluster_internal {

inline std::string Quote(std::string_view text) {
  constexpr size_t kMax = 64;
  const bool cut = text.size() > kMax;
  nlohmann::json json(std::string(text.substr(0, kMax)));
  std::string quoted = json.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  if (cut) quoted += "...";
  return quoted;
}

}  // namespace flurry::cluster_internal
