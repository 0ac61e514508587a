#!/usr/bin/env bash
# Configures (Ninja, RelWithDebInfo) and builds flurry.
# Usage: scripts/build.sh [BUILD_DIR] [extra cmake args...]   (BUILD_DIR defaults to <repo>/build)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Default: <repo>/build; an explicit BUILD_DIR is taken relative to the current directory.
BUILD_DIR="${1:-$ROOT/build}"
shift || true

cmake -S "$ROOT" -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@"
cmake --build "$BUILD_DIR"
