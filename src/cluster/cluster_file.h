// The cluster file: the hosts of a multi-host flurry cluster (the address of each host's
// flurryd, its slots and memory) and where the cluster's credentials live. A JSON document;
// format, caps and errors: docs/formats/cluster.md.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.h"

namespace flurry {

inline constexpr std::string_view kClusterFileFormat = "flurry-cluster";
inline constexpr int kClusterFileVersion = 1;
inline constexpr size_t kMaxClusterFileBytes = 1 << 20;  // checked before parsing
inline constexpr size_t kMaxClusterHosts = 1024;
inline constexpr int32_t kMaxHostSlots = 4096;

struct ClusterHost {
  std::string name;     // a member name (ValidateMemberName); the TLS server name of its flurryd
  std::string address;  // "IP:PORT" of its flurryd (IPv4)
  int32_t slots = 8;    // 1..kMaxHostSlots
  uint64_t memory_bytes = 0;  // 0 = not stated
};

struct ClusterFile {
  std::string name;  // the cluster's name (a member name too: it goes into the CA's CN)
  // Absolute after loading: a relative path in the file is relative to the file's directory.
  // Written as given (a relative path stays relative).
  std::string credentials_dir;
  std::vector<ClusterHost> hosts;

  // The host called `name`, or nullptr.
  const ClusterHost* Find(std::string_view name) const;
};

// Reads, parses and validates the file at `path`. Errors start with "cluster file PATH: ".
Result<ClusterFile> LoadClusterFile(const std::string& path);
// Validates `file` and writes it atomically (temporary file + rename).
Result<void> WriteClusterFile(const std::string& path, const ClusterFile& file);

// Parses and validates JSON text; a relative credentials path is resolved against `base_dir`
// (made absolute against the current directory when it is relative). Errors name the host and
// field: "host 2 (\"host2\"): slots must be 1..4096".
Result<ClusterFile> ParseClusterFile(std::string_view json, const std::string& base_dir);
// The JSON text of `file` (not validated; keys in a fixed order, ends with a newline).
std::string FormatClusterFile(const ClusterFile& file);

// A member (host or client) or cluster name: a DNS label, [a-z0-9-], 1..63 characters, not
// starting or ending with '-'. "flurry-member" is reserved: every member certificate carries it.
Result<void> ValidateMemberName(std::string_view name);

}  // namespace flurry
