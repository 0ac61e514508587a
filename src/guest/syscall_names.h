#pragma once

#include <cstdint>
#include <string>

namespace flurry {

// "openat" for 257; "syscall_999" for a number Linux does not define.
std::string SyscallName(uint64_t nr);

}  // namespace flurry
