#!/usr/bin/env bash
# Installs dependencies, builds flurry and runs the VM fork demo (examples/montecarlo_pi.c: one
# VM cloned 4 times, the clones' results joined and checked) plus a plain guest program.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/setup.sh
scripts/build.sh build

FLURRY="build/apps/flurry/flurry"
GUEST="build/tests/guest"
EXAMPLES="build/examples"
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
echo "=== flurry demo: static Linux executables, each run in a fresh microVM (KVM where /dev/kvm works, else the seccomp backend)"
echo
echo "--- 1. VM fork: montecarlo_pi generates 4M seeds, asks for 4 clones of its VM (sf_clone);"
echo "       each clone counts the darts of a quarter of the trials and returns its count"
echo "       (sf_exit_with); the parent joins (sf_join), adds up, and checks the total against"
echo "       the same computation done serially. Lines a clone prints start with [clone N]."
demo 0 "$FLURRY" run "$EXAMPLES/montecarlo_pi" 4 4194304
echo
echo "--- 2. hello (C): prints a greeting and its argv, exits with the status given in argv[1]"
demo 7 "$FLURRY" run "$GUEST/hello" 7 "two words" third
echo
echo "--- 3. VM fork across hosts: a test cluster of 4 hosts (network namespaces on a bridge, each"
echo "       with its own flurryd; scripts/cluster.sh). The parent runs here; --cluster sends its"
echo "       8 clones to the hosts, 2 each, and their memory follows on demand over the network."
if [[ "$(id -u)" -eq 0 ]] && ip netns list > /dev/null 2>&1; then
  export FLURRY_CLUSTER_NAME=demo FLURRY_CLUSTER_SUBNET=10.86.0 FLURRY_BUILD="$ROOT/build"
  trap 'scripts/cluster.sh down' EXIT
  cluster="$(scripts/cluster.sh up 4 | tail -n 1)"
  demo 0 "$FLURRY" run --cluster "$cluster" "$EXAMPLES/montecarlo_pi" 8 4194304
  demo 0 "$FLURRY" run --cluster "$cluster" "$GUEST/cluster_where" 8
  scripts/cluster.sh down
  trap - EXIT
else
  echo "(skipped: making test hosts needs root and ip netns)"
fi
echo
if [[ $failed -ne 0 ]]; then
  echo "=== demo FAILED"
  exit 1
fi
echo "=== demo done"
