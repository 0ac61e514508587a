// Choosing and creating a backend (flurry run --backend, FLURRY_BACKEND).
#include <fcntl.h>
#include <unistd.h>

#include <cstring>

#include "backend/backend.h"
#include "backend/kvm/kvm_backend.h"
#include "backend/seccomp/seccomp_backend.h"

namespace flurry {

Result<BackendKind> ParseBackendKind(const std::string& text) {
  if (text == "auto" || text.empty()) return BackendKind::kAuto;
  if (text == "kvm") return BackendKind::kKvm;
  if (text == "seccomp") return BackendKind::kSeccomp;
  return FailErrno(EINVAL,
                   fmt::format("unknown backend '{}' (expected kvm, seccomp or auto)", text));
}

std::string KvmUnavailableReason() {
  int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);
  if (fd < 0) return fmt::format("opening /dev/kvm: {}", std::strerror(errno));
  close(fd);
  return "";
}

BackendKind ResolveBackendKind(BackendKind kind) {
  if (kind != BackendKind::kAuto) return kind;
  return KvmUnavailableReason().empty() ? BackendKind::kKvm : BackendKind::kSeccomp;
}

Result<std::unique_ptr<Backend>> CreateBackend(BackendKind kind, const GuestLayout& layout) {
  switch (ResolveBackendKind(kind)) {
    case BackendKind::kKvm: {
      if (std::string why = KvmUnavailableReason(); !why.empty()) {
        return Fail("the kvm backend is not available: {} (--backend seccomp runs without KVM)",
                    why);
      }
      auto backend = FLURRY_TRY_CTX(KvmBackend::Create(layout), "creating the KVM VM");
      return std::unique_ptr<Backend>(std::move(backend));
    }
    case BackendKind::kSeccomp:
    case BackendKind::kAuto: {
      auto backend = FLURRY_TRY_CTX(SeccompBackend::Create(layout), "starting the seccomp backend");
      return std::unique_ptr<Backend>(std::move(backend));
    }
  }
  return Fail("unknown backend");
}

}  // namespace flurry
