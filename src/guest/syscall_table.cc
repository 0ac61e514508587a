#include <cerrno>
#include <cstdio>

#include "guest/syscall.h"
#include "guest/syscall_names.h"

namespace flurry {

SyscallTable SyscallTable::Default() {
  SyscallTable table;
  RegisterMemorySyscalls(table);
  RegisterFileSyscalls(table);
  RegisterTimeSyscalls(table);
  RegisterProcessSyscalls(table);
  RegisterSignalSyscalls(table);
  RegisterTimerSyscalls(table);
  RegisterPosixTimerSyscalls(table);
  RegisterThreadSyscalls(table);
  RegisterWaitSyscalls(table);
  RegisterPollSyscalls(table);
  return table;
}

void SyscallTable::Register(uint64_t nr, SyscallHandler handler) {
  if (nr < kMaxSyscall) handlers_[nr] = handler;
}

SyscallResult SyscallTable::Dispatch(SyscallContext& context, const SyscallArgs& args) {
  if (args.nr < kMaxSyscall && handlers_[args.nr] != nullptr) {
    return handlers_[args.nr](context, args);
  }
  if (reported_unknown_.insert(args.nr).second) {
    std::fprintf(stderr, "flurry: guest called unsupported syscall '%s' (%llu); returning ENOSYS\n",
                 SyscallName(args.nr).c_str(), static_cast<unsigned long long>(args.nr));
  }
  return SyscallResult::Errno(ENOSYS);
}

}  // namespace flurry
