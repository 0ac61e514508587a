#!/usr/bin/env bash
# Installs everything flurry needs to build and test on a fresh Debian 12 machine.
# Idempotent: when every package is already installed it returns without touching apt.
set -euo pipefail

PACKAGES=(
  build-essential g++ cmake ninja-build python3
  libgtest-dev libgmock-dev libbenchmark-dev
  libfmt-dev libcli11-dev libspdlog-dev
  protobuf-compiler libprotobuf-dev nlohmann-json3-dev
  libxxhash-dev libzstd-dev
  # src/net: SHA-256 and AES-GCM for the page server's hello and pushes (static libnettle.a)
  nettle-dev
  # src/cluster: the cluster's mutual-TLS CA and member certificates (OpenSSL's libcrypto, the
  # static libcrypto.a for the -static flurry binary; libssl for flurryd's TLS)
  libssl-dev
  # flurryd and flurry-remote: the cluster control plane (gRPC over mutual TLS)
  libgrpc++-dev protobuf-compiler-grpc pkg-config
  clang-format git ca-certificates hyperfine
  # scripts/kvm_in_qemu.sh: the KVM backend tests in a QEMU TCG guest where /dev/kvm is missing
  qemu-system-x86 busybox-static cpio
  # tests/integration/netns_test.cc, bench/*_netns.sh, scripts/cluster.sh: test hosts as
  # network namespaces; nftables: packet loss between them (remote_clone_test)
  iproute2 nftables
)

missing=()
for pkg in "${PACKAGES[@]}"; do
  status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
  if [[ "$status" != "install ok installed" ]]; then
    missing+=("$pkg")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
  SUDO=(sudo)
fi

echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
"${SUDO[@]}" apt-get update
"${SUDO[@]}" apt-get install -y --no-install-recommends "${PACKAGES[@]}"
echo "setup: done"
