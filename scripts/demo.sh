#!/usr/bin/env bash
# Installs dependencies, builds flurry and runs two static guest programs inside KVM VMs.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/setup.sh
scripts/build.sh build

FLURRY="build/apps/flurry/flurry"
GUEST="build/tests/guest"
failed=0

# demo EXPECTED_STATUS COMMAND...: shows the command, runs it, checks its exit status.
demo() {
  local expected="$1"
  shift
  echo
  echo "\$ $(printf '%q ' "$@")"
  local rc=0
  "$@" || rc=$?
  if [[ $rc -eq $expected ]]; then
    echo "[exit status $rc, as expected]"
  else
    echo "[exit status $rc, expected $expected: FAILED]"
    failed=1
  fi
}

echo
echo "=== flurry demo: each program is a static Linux executable, run in a fresh KVM VM"
echo
echo "--- 1. hello (C): prints a greeting and its argv, exits with the status given in argv[1]"
demo 7 "$FLURRY" run "$GUEST/hello" 7 "two words" third
echo
echo "--- 2. cxx_features (C++): iostream, exceptions, std::sort of 100k ints, std::map,"
echo "       std::string and a 64 MiB std::vector (mmap/munmap), each checked"
demo 0 "$FLURRY" run "$GUEST/cxx_features"
echo
if [[ $failed -ne 0 ]]; then
  echo "=== demo FAILED"
  exit 1
fi
echo "=== demo done"
