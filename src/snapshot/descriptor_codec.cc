#include "snapshot/descriptor_codec.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <array>
#include <bit>
#include <csignal>
#include <cstddef>
#include <cstring>
#include <set>
#include <string_view>

#include "arch/x86_64/layout.h"
#include "base/check.h"
#include "base/file_io.h"
#include "base/unique_fd.h"
#include "descriptor.pb.h"
#include "descriptor_v1.pb.h"
#include "snapshot/descriptor_checks.h"
#include "snapshot/descriptor_proto.h"
#include "snapshot/descriptor_v1.h"

namespace flurry {

using namespace descriptor_internal;
namespace pb = ::flurry::descriptor::v2;
namespace pb1 = ::flurry::descriptor::v1;

static_assert(offsetof(DescriptorHeader, format_version) == 8);
static_assert(offsetof(DescriptorHeader, flags) == 12);
static_assert(offsetof(DescriptorHeader, payload_size) == 16);
static_assert(offsetof(DescriptorHeader, payload_xxh64) == 24);
static_assert(kMaxDescriptorPayloadSize <= INT32_MAX, "protobuf parses at most 2 GiB");

// ---------------------------------------------------------------------------------------------

std::vector<uint8_t> EncodeDescriptor(const VmDescriptor& descriptor) {
  pb::VmDescriptor message;
  ToProto(descriptor, &message);
  const size_t payload_size = message.ByteSizeLong();
  std::vector<uint8_t> out(kDescriptorHeaderSize + payload_size);
  uint8_t* payload = out.data() + kDescriptorHeaderSize;
  FLURRY_CHECK(message.SerializeWithCachedSizesToArray(payload) == payload + payload_size);
  DescriptorHeader header{};
  std::memcpy(header.magic, kDescriptorMagic, sizeof(header.magic));
  header.format_version =
      descriptor.processes ? VmDescriptor::kFormatVersionProcesses : VmDescriptor::kFormatVersion;
  header.flags = 0;
  header.payload_size = payload_size;
  header.payload_xxh64 = XXH64(payload, payload_size, 0);
  std::memcpy(out.data(), &header, sizeof(header));
  return out;
}

Result<VmDescriptor> DecodeDescriptor(std::span<const uint8_t> bytes) {
  const size_t magic_bytes = std::min(bytes.size(), sizeof(kDescriptorMagic));
  if (magic_bytes == 0 || std::memcmp(bytes.data(), kDescriptorMagic, magic_bytes) != 0) {
    return Fail("not a flurry VM descriptor");
  }
  if (bytes.size() < kDescriptorHeaderSize) {
    return Fail("truncated descriptor: {} bytes, shorter than the {}-byte header", bytes.size(),
                kDescriptorHeaderSize);
  }
  DescriptorHeader header;
  std::memcpy(&header, bytes.data(), sizeof(header));
  const bool version1 = header.format_version == kFormatVersion1;
  const bool with_processes = header.format_version == VmDescriptor::kFormatVersionProcesses;
  if (header.format_version != VmDescriptor::kFormatVersion && !version1 && !with_processes) {
    return Fail(
        "descriptor format version {} is not supported (this flurry reads versions {}, {} and {})",
        header.format_version, kFormatVersion1, VmDescriptor::kFormatVersion,
        VmDescriptor::kFormatVersionProcesses);
  }
  if (header.flags != 0) return Fail("descriptor flags {:#x} are not supported", header.flags);
  if (header.payload_size > kMaxDescriptorPayloadSize) {
    return Fail("descriptor payload of {} bytes exceeds the {} MiB limit", header.payload_size,
                kMaxDescriptorPayloadSize >> 20);
  }
  const std::span<const uint8_t> payload = bytes.subspan(kDescriptorHeaderSize);
  if (payload.size() < header.payload_size) {
    return Fail("truncated descriptor: header says {} bytes, file has {}", header.payload_size,
                payload.size());
  }
  if (payload.size() > header.payload_size) {
    return Fail("descriptor has {} bytes after its {}-byte payload",
                payload.size() - header.payload_size, header.payload_size);
  }
  if (XXH64(payload.data(), payload.size(), 0) != header.payload_xxh64) {
    return Fail("descriptor checksum mismatch (corrupted?)");
  }
  const int payload_bytes = static_cast<int>(payload.size());
  // Fields 1 and 3..10 are the same in both versions (descriptor_v1.proto).
  pb::VmDescriptor message;
  if (!message.ParseFromArray(payload.data(), payload_bytes)) {
    return Fail("descriptor payload is not a valid flurry.descriptor.v{}.VmDescriptor message",
                header.format_version);
  }
  VmDescriptor descriptor;
  if (version1) {
    pb1::VmDescriptor v1;
    if (!v1.ParseFromArray(payload.data(), payload_bytes)) {
      return Fail("descriptor payload is not a valid flurry.descriptor.v1.VmDescriptor message");
    }
    descriptor = FLURRY_TRY(FromProtoV1(message, v1));
  } else {
    descriptor = FLURRY_TRY(FromProto(message));
  }
  if (descriptor.processes.has_value() != with_processes) {
    return Fail("a descriptor of format version {} {} the VM's processes", header.format_version,
                with_processes ? "without" : "with");
  }
  FLURRY_TRY(ValidateDescriptor(descriptor));
  return descriptor;
}

uint32_t DescriptorFormatVersion(std::span<const uint8_t> bytes) {
  if (bytes.size() < kDescriptorHeaderSize ||
      std::memcmp(bytes.data(), kDescriptorMagic, sizeof(kDescriptorMagic)) != 0) {
    return 0;
  }
  DescriptorHeader header;
  std::memcpy(&header, bytes.data(), sizeof(header));
  return header.format_version;
}

Result<void> WriteDescriptorFile(const std::string& path, const VmDescriptor& descriptor) {
  const std::vector<uint8_t> bytes = EncodeDescriptor(descriptor);
  return WriteFileAtomic(
      path, std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), 0600,
      /*exclusive=*/false);
}

Result<std::vector<uint8_t>> ReadDescriptorBytes(const std::string& path) {
  UniqueFd fd(open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) return FailErrno("cannot open");
  struct stat st {};
  if (fstat(fd.get(), &st) != 0) return FailErrno("fstat");
  if (!S_ISREG(st.st_mode)) return Fail("not a regular file");
  constexpr uint64_t kMaxFileSize = kDescriptorHeaderSize + kMaxDescriptorPayloadSize;
  if (static_cast<uint64_t>(st.st_size) > kMaxFileSize) {
    return Fail("descriptor file of {} bytes exceeds the {} MiB limit", st.st_size,
                kMaxDescriptorPayloadSize >> 20);
  }
  // Read at most kMaxFileSize + 1 bytes, whatever the file does meanwhile.
  std::vector<uint8_t> bytes(static_cast<size_t>(st.st_size) + 1);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = read(fd.get(), bytes.data() + done, bytes.size() - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return FailErrno("reading");
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done > kMaxFileSize) {
    return Fail("descriptor file exceeds the {} MiB limit", kMaxDescriptorPayloadSize >> 20);
  }
  bytes.resize(done);
  return bytes;
}

Result<VmDescriptor> ReadDescriptorFile(const std::string& path) {
  const std::vector<uint8_t> bytes = FLURRY_TRY(ReadDescriptorBytes(path));
  return DecodeDescriptor(bytes);
}

Result<void> CheckCompatibleWithHost(const VmDescriptor& descriptor,
                                     const x86::CpuSignature& host) {
  if (descriptor.cpu == host) return {};
  return Fail(
      "descriptor was captured on {}; this host is {}; refusing to run it on a different CPU "
      "model",
      descriptor.cpu.ToString(), host.ToString());
}

}  // namespace flurry
