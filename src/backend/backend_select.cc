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

Result<std::unique_ptr<PreparedBackend>> PrepareBackend(BackendKind kind, uint64_t ram_bytes) {
  if (ResolveBackendKind(kind) != BackendKind::kKvm) return nullptr;
  auto prepared = FLURRY_TRY_CTX(KvmBackend::Prepare(ram_bytes), "making the KVM VM ahead");
  return std::unique_ptr<PreparedBackend>(std::move(prepared));
}

Result<std::unique_ptr<Backend>> CreateBackend(BackendKind kind, const GuestLayout& layout,
                                               std::unique_ptr<PreparedBackend> prepared) {
  switch (ResolveBackendKind(kind)) {
    case BackendKind::kKvm: {
      if (std::string why = KvmUnavailableReason(); !why.empty()) {
        return Fail("the kvm backend is not available: {} (--backend seccomp runs without KVM)",
                    why);
      }
      std::unique_ptr<KvmPrepared> parts(dynamic_cast<KvmPrepared*>(prepared.get()));
      if (parts) prepared.release();
      auto backend =
          FLURRY_TRY_CTX(KvmBackend::Create(layout, std::move(parts)), "creating the KVM VM");
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
