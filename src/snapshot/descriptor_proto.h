// Internal to the descriptor codec: VmDescriptor <-> the flurry.descriptor.v1 protobuf message.
#pragma once

#include "base/error.h"
#include "descriptor.pb.h"
#include "snapshot/vm_descriptor.h"

namespace flurry::descriptor_internal {

void ToProto(const VmDescriptor& descriptor, ::flurry::descriptor::v1::VmDescriptor* out);
// Representation checks only (values the C++ types cannot hold, missing messages, malformed
// arrays); semantic checks are ValidateDescriptor's.
Result<VmDescriptor> FromProto(const ::flurry::descriptor::v1::VmDescriptor& in);

}  // namespace flurry::descriptor_internal
