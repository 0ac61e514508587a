// Test hosts as network namespaces: finding `ip`, and whether namespaces can be made here.
#pragma once

#include <unistd.h>

#include <string>

#include "harness.h"

namespace flurry_test {

// iproute2's `ip` (the harness execs by path).
inline std::string IpBinary() {
  for (const char* path : {"/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"}) {
    if (access(path, X_OK) == 0) return path;
  }
  return "ip";
}

// Why network namespaces cannot be made here ("" when they can).
inline std::string WhyNoNetns() {
  if (geteuid() != 0) return "needs root (network namespaces)";
  auto r = Run({IpBinary(), "netns", "list"}, WithDeadline(10));
  if (!r.exited || r.exit_code != 0) return "no `ip netns` here: " + r.err;
  return "";
}

}  // namespace flurry_test
