// `flurry ctl SOCK serve HOST:PORT [multicast]`: the VM as it stands, frozen in a page server
// process (a copy-on-write fork of this VMM) that serves its descriptor and memory to VMs restoring
// from it on any host (docs/protocols/page_server.md). The VM runs on at once.
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdio>

#include "arch/x86_64/layout.h"
#include "net/page_server.h"
#include "snapshot/descriptor_codec.h"
#include "vmm/served_files.h"
#include "vmm/vm.h"

namespace flurry {

Result<ControlReply> Vm::ServeSnapshot(const std::string& address, bool multicast) {
  const VmDescriptor descriptor = FLURRY_TRY(CaptureDescriptor());
  ServedMemory served = FLURRY_TRY(ServeDescriptor(descriptor, address, multicast));
  page_servers_.push_back(served.pid);
  ControlReply reply;
  reply.address = served.address;
  reply.key = served.key;
  reply.server_pid = served.pid;
  reply.descriptor_bytes = EncodeDescriptor(descriptor).size();
  return reply;
}

Result<ForkHost::ServedMemory> Vm::ServeForRemoteClones(const CloneState& state,
                                                        const std::string& bind, bool push_pages) {
  // The descriptor a local clone would become (BecomeClone), with the page map: the clone's
  // host zero-fills what the parent never touched instead of fetching it.
  VmDescriptor descriptor = FLURRY_TRY(CaptureDescriptor());
  descriptor.vcpu = state.cpu;
  descriptor.files = state.files;  // offsets as at the clone instant
  ServedMemory served = FLURRY_TRY(ServeDescriptor(descriptor, bind, push_pages));
  return served;
}

Result<ForkHost::ServedMemory> Vm::ServeDescriptor(const VmDescriptor& descriptor,
                                                   const std::string& address, bool push_pages) {
  // Page servers that have ended are reaped here (they outlive this VM otherwise).
  std::erase_if(page_servers_, [](pid_t pid) { return waitpid(pid, nullptr, WNOHANG) != 0; });

  const HostPort where = FLURRY_TRY(ParseHostPort(address));
  const std::vector<uint8_t> encoded = EncodeDescriptor(descriptor);
  PageServer server = FLURRY_TRY(PageServer::Listen(where));
  const PageKey key = FLURRY_TRY(PageKey::Random());
  // Pushes go out through the interface the server listens on; where that cannot be (no route
  // for multicast), the clones fetch every page themselves.
  std::unique_ptr<PushSender> pushes;
  if (push_pages) {
    auto opened = PushSender::Open(where.host, server.address().port, key,
                                   backend_->memory().size() / x86::kPageSize);
    if (opened) {
      pushes = std::move(*opened);
    } else {
      std::fprintf(stderr, "flurry: serving %s without page pushes: %s\n",
                   server.address().ToString().c_str(), opened.error().message().c_str());
    }
  }
  const pid_t owner = getpid();
  const pid_t pid =
      FLURRY_TRY_CTX(ForkWithHooks(*this, /*tied_to_parent=*/false), "starting the page server");
  if (pid == 0) {
    // The page server: serves until this VM is gone and no restored VM is connected.
    prctl(PR_SET_NAME, "flurry-pages");
    ForgetGuestPipes();  // the VM's pipes must see end of file without it
    // The VM's tickets, checkpoints and outcome channel are the VM's: their snapshot processes
    // end when the VM lets go of them (sf_join, sf_release_checkpoint), and its parent hears
    // of its end, whatever this server still serves.
    fork_.BecomeGuestProcess();
    signal(SIGINT, SIG_IGN);  // a ^C meant for the VM's terminal is not for the server
    // It may outlive the VM: it must not hold the VM's stdio (a pipe reader would wait for it).
    if (int null = open("/dev/null", O_RDWR | O_CLOEXEC); null >= 0) {
      for (int fd = 0; fd <= 2; ++fd) dup2(null, fd);
      close(null);
    }
    const int owner_fd = static_cast<int>(syscall(SYS_pidfd_open, owner, 0));
    if (owner_fd < 0 || getppid() != owner) {
      ReleaseGuest();
      _exit(0);  // the VM is gone already and nobody can have connected
    }
    GuestMemory& memory = backend_->memory();
    // The guest's --dir for remote clones (their copy of it is filled from here).
    std::optional<PageServer::FileService> files;
    if (const HostDir* root = state_.fds.root()) files = ServeFilesOf(*root);
    auto served = server.Serve(
        encoded, memory.size() / x86::kPageSize,
        [&memory](uint64_t gpa, void* dst, uint64_t len) {
          return memory.ReadPhysical(gpa, dst, len);
        },
        owner_fd, key, files ? &*files : nullptr, pushes.get());
    ReleaseGuest();
    _exit(served ? 0 : 1);
  }
  ServedMemory served;
  served.address = server.address().ToString();
  served.key = key.Hex();
  served.pid = pid;
  served.pidfd.Reset(static_cast<int>(syscall(SYS_pidfd_open, pid, 0)));
  if (!served.pidfd.valid()) {
    const auto error = FailErrno("pidfd_open for the page server");
    kill(pid, SIGKILL);  // nobody could end it later
    return error;
  }
  return served;
}

}  // namespace flurry
