// Shared by the descriptor codec tests: a descriptor with every field set, field-by-field
// comparison, blob surgery, and allocation tracking.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <functional>
#include <span>
#include <string>
#include <vector>

#include "descriptor.pb.h"
#include "snapshot/descriptor_codec.h"

namespace flurry::descriptor_test {

namespace pb = ::flurry::descriptor::v2;

inline constexpr uint64_t kMiB = 1ULL << 20;
inline constexpr uint64_t kGiB = 1ULL << 30;

// Every x86::UserRegs field by name, in declaration order.
struct UserRegField {
  const char* name;
  uint64_t x86::UserRegs::*field;
};
extern const UserRegField kUserRegFields[20];

// A valid XSAVE image in the standard format: `size` bytes, XSTATE_BV `xstate_bv`, MXCSR
// 0x1f80, every other legacy-region and extended byte a position-dependent non-zero pattern,
// the software-reserved bytes and the header's reserved bytes zero.
std::vector<uint8_t> XsaveImage(size_t size, uint64_t xstate_bv);

// A descriptor with every field set to a valid, non-default, distinct value.
VmDescriptor FullDescriptor();

// Field-by-field comparison with readable failures.
void ExpectSameDescriptor(const VmDescriptor& a, const VmDescriptor& b);

// `d` (FullDescriptor) as the descriptor of a VM of several processes' init: d's process
// (4242), a running child 4300 and an ended one 4301 (exit status 7), and the pipe between them
// (id 78, 3 bytes).
VmDescriptor WithProcesses(VmDescriptor d);

// Blob surgery. The header is built here independently of the codec (it doubles as a check of
// the documented layout).
template <typename T>
void Put(std::vector<uint8_t>& blob, size_t offset, T value) {
  std::memcpy(blob.data() + offset, &value, sizeof(value));
}
template <typename T>
T Get(const std::vector<uint8_t>& blob, size_t offset) {
  T value;
  std::memcpy(&value, blob.data() + offset, sizeof(value));
  return value;
}

// Recomputes the checksum over whatever follows the header.
void Reseal(std::vector<uint8_t>& blob);

// A blob with a correct header (format version `version`) around an arbitrary payload.
std::vector<uint8_t> Wrap(const std::string& payload, uint32_t version = 2);

// Encodes `d` (without validation), then lets `edit` change the protobuf message.
std::vector<uint8_t> EncodeWithProtoEdit(const VmDescriptor& d,
                                         const std::function<void(pb::VmDescriptor&)>& edit);

// DecodeDescriptor's error message, or "(decoded successfully)".
std::string DecodeError(std::span<const uint8_t> blob);

// The error DecodeDescriptor gives for `d` after an encode (which never validates).
std::string ErrorFor(const VmDescriptor& d);

// ValidateDescriptor's error message, or "(valid)".
std::string ValidateError(const VmDescriptor& d);

// Tracks the largest single operator-new request made while alive (operator new is replaced in
// descriptor_test_support.cc), so a test can prove a huge size claim is refused without
// allocating it.
class AllocationTracker {
 public:
  AllocationTracker();
  ~AllocationTracker();
  size_t largest() const;
};

class TempDir {
 public:
  TempDir();
  ~TempDir();
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace flurry::descriptor_test
