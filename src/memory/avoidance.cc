#include "memory/avoidance.h"

#include <utility>

namespace flurry {

Result<Avoidance> ParseAvoidance(std::string_view text) {
  if (text == "all") return Avoidance{};
  if (text == "none") return Avoidance::None();
  Avoidance avoid = Avoidance::None();
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    const std::string_view name = text.substr(
        start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    bool* flag = name == "zero"          ? &avoid.zero
                 : name == "fresh"       ? &avoid.fresh
                 : name == "overwritten" ? &avoid.overwritten
                                         : nullptr;
    if (flag == nullptr) {
      return Fail("'{}': expected all, none, or a comma list of zero, fresh, overwritten", text);
    }
    if (*flag) return Fail("'{}': {} is named twice", text, name);
    *flag = true;
    if (comma == std::string_view::npos) return avoid;
    start = comma + 1;
  }
}

std::string FormatAvoidance(const Avoidance& avoid) {
  if (avoid.all()) return "all";
  std::string text;
  for (const auto& [on, name] : {std::pair{avoid.zero, "zero"}, std::pair{avoid.fresh, "fresh"},
                                 std::pair{avoid.overwritten, "overwritten"}}) {
    if (!on) continue;
    if (!text.empty()) text += ',';
    text += name;
  }
  return text.empty() ? "none" : text;
}

}  // namespace flurry
