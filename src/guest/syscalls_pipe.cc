// pipe and pipe2: a host pipe in the VMM, its two ends guest fds (FileKind::kPipe). The host
// ends are always non-blocking: a guest that reads an empty pipe or writes a full one without
// O_NONBLOCK parks its thread until the host end is ready (syscalls_file.cc, ThreadWait::kFd),
// so its other threads, the writer or reader among them, run meanwhile. The guest's
// O_NONBLOCK lives in OpenFile::flags only. See docs/design.md ("Pipes and waiting for fds").
#include "guest/syscalls_file_support.h"

namespace flurry {
namespace file_syscalls {
namespace {

// The flags pipe2 takes (O_DIRECT: packet mode, which the host pipe gets too).
constexpr int kPipeFlags = O_CLOEXEC | O_NONBLOCK | O_DIRECT;

OpenFile PipeEnd(UniqueFd host, int access, int flags) {
  OpenFile end;
  end.kind = FileKind::kPipe;
  end.host = std::move(host);
  end.flags = access | (flags & (O_NONBLOCK | O_DIRECT));
  return end;
}

// pipe2(fds, flags): fds[0] the read end, fds[1] the write end, the lowest free fds in turn.
Value MakePipe(SyscallContext& context, uint64_t fds_addr, int flags) {
  if ((flags & ~kPipeFlags) != 0) return FailErrno(EINVAL, "pipe2 flags");
  FdTable& fds = context.state.fds;
  // Like Linux, both fd slots first: no pipe is made on EMFILE.
  if (fds.OpenCount() + 2 > FdTable::kMaxFds) return FailErrno(EMFILE, "guest fd table full");
  int ends[2];
  if (pipe2(ends, O_CLOEXEC | O_NONBLOCK | (flags & O_DIRECT)) != 0) return HostError("pipe2");
  UniqueFd read_end(ends[0]);
  UniqueFd write_end(ends[1]);
  const bool cloexec = (flags & O_CLOEXEC) != 0;
  const int reader =
      FLURRY_TRY(fds.Install(PipeEnd(std::move(read_end), O_RDONLY, flags), cloexec));
  auto writer = fds.Install(PipeEnd(std::move(write_end), O_WRONLY, flags), cloexec);
  if (!writer) {
    (void)fds.Close(reader);
    return std::unexpected(writer.error());
  }
  const int32_t guest_fds[2] = {reader, *writer};
  if (auto written = context.memory.Write(fds_addr, guest_fds, sizeof guest_fds); !written) {
    // Linux makes no fds when it cannot report them.
    (void)fds.Close(reader);
    (void)fds.Close(*writer);
    return std::unexpected(written.error());
  }
  return 0;
}

Value Pipe(SyscallContext& context, const SyscallArgs& args) {
  return MakePipe(context, args.arg[0], 0);
}

Value Pipe2(SyscallContext& context, const SyscallArgs& args) {
  return MakePipe(context, args.arg[0], IntArg(args.arg[1]));
}

}  // namespace

void RegisterPipeSyscalls(SyscallTable& table) {
  table.Register(SYS_pipe, Handle<Pipe>);
  table.Register(SYS_pipe2, Handle<Pipe2>);
}

}  // namespace file_syscalls
}  // namespace flurry
