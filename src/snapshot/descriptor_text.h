// A human-readable dump of a VmDescriptor (what `flurry descriptor show FILE` prints).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

#include "snapshot/vm_descriptor.h"

namespace flurry {

// Multi-line summary: format version, encoded size, CPU signature, clone identity, backend,
// registers, XCR0 and XSAVE size, memory layout, page map, fds, signals with non-default
// dispositions, identity. Ends with a newline. `encoded_size` is the size of the blob the
// descriptor came from; `format_version` the version in its header (DescriptorFormatVersion):
// a version 1 blob is described as converted.
std::string DescribeDescriptor(const VmDescriptor& descriptor, size_t encoded_size,
                               uint32_t format_version = VmDescriptor::kFormatVersion);

}  // namespace flurry
