// Avoidance: which of the memory-on-demand avoidance heuristics (memory/lazy_pages.h) a VM
// uses. All of them by default; each can be switched off to measure what it saves
// (`flurry restore --avoid LIST`, `flurry run --clone-avoid LIST`, RunClonesRequest.avoid):
//   zero         pages the image's page map says were never populated are zero-filled here;
//                off: they are fetched as if populated (the source holds zeros for them)
//   fresh        memory allocated after the image (brk, anonymous mmap) is never fetched;
//                off: it is fetched, or zero-filled by `zero`, as the image says
//   overwritten  a page the VMM writes whole (read(2) into a page-aligned buffer) is installed
//                from the written bytes; off: it is fetched first, then written
// Switching one off never changes what the guest reads, only what crosses from the source.
#pragma once

#include <string>
#include <string_view>

#include "base/error.h"

namespace flurry {

struct Avoidance {
  bool zero = true;
  bool fresh = true;
  bool overwritten = true;

  static Avoidance None() { return {false, false, false}; }
  bool all() const { return zero && fresh && overwritten; }
  bool operator==(const Avoidance&) const = default;
};

// "all", "none", or a comma list of the heuristics to use, each at most once ("zero,fresh").
Result<Avoidance> ParseAvoidance(std::string_view text);

// The canonical text ParseAvoidance reads back: "all", "none", or the heuristics in use in the
// order zero, fresh, overwritten.
std::string FormatAvoidance(const Avoidance& avoid);

}  // namespace flurry
