// The guest's vDSO: a small shared object mapped into every guest that answers clock_gettime,
// gettimeofday and time from the TSC in user mode, without a VM exit.
#pragma once

#include <cstdint>

#include "base/error.h"
#include "memory/guest_memory.h"

namespace flurry {

// Installs the vDSO image and its clock data page; returns the image's guest address for
// AT_SYSINFO_EHDR, or 0 when this build carries no vDSO.
Result<uint64_t> InstallVdso(GuestMemory& memory);

}  // namespace flurry
