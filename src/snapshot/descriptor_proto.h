// Internal to the descriptor codec: VmDescriptor <-> the flurry.descriptor.v2 protobuf message.
#pragma once

#include "base/error.h"
#include "descriptor.pb.h"
#include "snapshot/vm_descriptor.h"

namespace flurry::descriptor_internal {

void ToProto(const VmDescriptor& descriptor, ::flurry::descriptor::v2::VmDescriptor* out);
// Representation checks only (values the C++ types cannot hold, missing messages, malformed
// arrays, sizes bounded before containers are filled); semantic checks are ValidateDescriptor's.
Result<VmDescriptor> FromProto(const ::flurry::descriptor::v2::VmDescriptor& in);

// FromProto without the fields format version 2 added (vcpu, backend): the part of the message
// format versions 1 and 2 share (fields 1, 3..10). The result's vcpu and backend are defaults.
Result<VmDescriptor> SharedFieldsFromProto(const ::flurry::descriptor::v2::VmDescriptor& in);

// The guest's files and its processes (descriptor_proto_files.cc), as ToProto and FromProto
// convert them, with FromProto's representation checks.
void FilesToProto(const FilesRecord& files, ::flurry::descriptor::v2::Files* out);
void ProcessesToProto(const ProcessesRecord& processes,
                      ::flurry::descriptor::v2::GuestProcesses* out);
Result<FilesRecord> FilesFromProto(const ::flurry::descriptor::v2::Files& in);
Result<ProcessesRecord> ProcessesFromProto(const ::flurry::descriptor::v2::GuestProcesses& in);

}  // namespace flurry::descriptor_internal
