// The VM descriptor codec: VmDescriptor <-> a versioned, checksummed byte blob, used both as a
// file and on the wire. Format: docs/formats/descriptor.md.
//
//   magic "FLYVMDSC" | u32 format_version | u32 flags | u64 payload_size | u64 xxh64(payload)
//   | payload (protobuf flurry.descriptor.v2.VmDescriptor, src/snapshot/descriptor.proto)
//
// Format version 2 is written; version 1 (flurry before version 2) is also read, converted.
//
// Decoding trusts nothing: sizes are capped before anything is allocated or parsed, and a
// parsed descriptor is validated field by field (ValidateDescriptor) before it is returned.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "arch/x86_64/cpu_signature.h"
#include "base/error.h"
#include "snapshot/vm_descriptor.h"

namespace flurry {

// The fixed header in front of every descriptor payload (little-endian on the wire; flurry
// only runs on x86-64, so the in-memory layout is the wire layout).
struct DescriptorHeader {
  char magic[8];            // "FLYVMDSC", no terminator
  uint32_t format_version;  // VmDescriptor::kFormatVersion
  uint32_t flags;           // 0; any other value is refused
  uint64_t payload_size;    // bytes following the header
  uint64_t payload_xxh64;   // XXH64(payload, seed 0)
};
static_assert(sizeof(DescriptorHeader) == 32);

inline constexpr char kDescriptorMagic[8] = {'F', 'L', 'Y', 'V', 'M', 'D', 'S', 'C'};
inline constexpr size_t kDescriptorHeaderSize = sizeof(DescriptorHeader);
inline constexpr uint64_t kMaxDescriptorPayloadSize = 64ULL << 20;  // 64 MiB

// Limits ValidateDescriptor enforces (docs/formats/descriptor.md, "Validation").
inline constexpr size_t kMaxDescriptorPathBytes = 4096;  // PATH_MAX
inline constexpr size_t kMaxHostnameBytes = 64;          // HOST_NAME_MAX
inline constexpr size_t kMaxVendorBytes = 12;            // CPUID vendor string
inline constexpr size_t kMaxBackendBytes = 32;           // VmDescriptor::backend

// Serialises `descriptor` (header + payload). Never fails and never validates: a descriptor
// that breaks ValidateDescriptor's rules encodes, and DecodeDescriptor then refuses it.
std::vector<uint8_t> EncodeDescriptor(const VmDescriptor& descriptor);

// Parses and validates a blob. Checks, in order: header present, magic, format version (2, or
// 1: converted, see docs/formats/descriptor.md), flags, payload size cap, payload size ==
// remaining bytes, checksum, protobuf parse, then every field (ValidateDescriptor). Errors name
// the first problem found.
Result<VmDescriptor> DecodeDescriptor(std::span<const uint8_t> bytes);

// The format version in a blob's header (what DescribeDescriptor reports), without checking
// anything else; 0 if `bytes` does not start with a descriptor header.
uint32_t DescriptorFormatVersion(std::span<const uint8_t> bytes);

// The semantic checks DecodeDescriptor applies after parsing: every field in range, rip and
// rsp inside user memory, FS/GS bases canonical, the XSAVE image well-formed (standard format,
// components within xcr0), memory layout ordered and inside RAM, regions and page runs sorted,
// non-overlapping and inside their areas, fds unique and well-formed, strings bounded. Capture code
// may call it before writing a descriptor. Error messages start with "invalid descriptor: ".
Result<void> ValidateDescriptor(const VmDescriptor& descriptor);

// Writes EncodeDescriptor(descriptor) to `path` atomically: a temporary file in the same
// directory (mode 0600), fsync, rename over `path`, fsync of the directory.
Result<void> WriteDescriptorFile(const std::string& path, const VmDescriptor& descriptor);

// Reads a descriptor file's bytes without decoding them (e.g. to send them on). A file larger
// than header + kMaxDescriptorPayloadSize, or not a regular file, is refused before it is read.
Result<std::vector<uint8_t>> ReadDescriptorBytes(const std::string& path);

// Reads and decodes a descriptor file (ReadDescriptorBytes + DecodeDescriptor). Error
// messages of both do not repeat the path; callers add it.
Result<VmDescriptor> ReadDescriptorFile(const std::string& path);

// Refuses a descriptor captured on a different CPU model (CPUID is not intercepted on every
// backend, so guest code may have chosen paths the new host lacks):
// "descriptor was captured on <sig>; this host is <sig>; refusing to run it on a different
// CPU model".
Result<void> CheckCompatibleWithHost(const VmDescriptor& descriptor, const x86::CpuSignature& host);

}  // namespace flurry
