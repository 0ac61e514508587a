// A human-readable dump of a VmDescriptor (what `flurry descriptor show FILE` prints).
#pragma once

#include <cstddef>
#include <string>

#include "snapshot/vm_descriptor.h"

namespace flurry {

// Multi-line summary: format version, encoded size, CPU signature, clone identity, registers,
// memory layout, page map, fds, signals with non-default dispositions, identity. Ends with a
// newline. `encoded_size` is the size of the blob the descriptor came from.
std::string DescribeDescriptor(const VmDescriptor& descriptor, size_t encoded_size);

}  // namespace flurry
