#!/usr/bin/env bash
# Installs dependencies, builds flurry and runs every test:
#   1. build/       (RelWithDebInfo): all CTest tests (unit + integration), 2 at a time;
#   2. build-asan/  (ASan + UBSan):   the unit tests (ctest -L unit).
# Exits non-zero if anything fails. The last line is a summary: "summary: N passed, M failed".
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

LOG_DIR="$(mktemp -d)"
trap 'rm -rf "$LOG_DIR"' EXIT

total_passed=0
total_failed=0
problems=()

# run_ctest NAME ctest-args...: runs ctest, adds its counts to the totals.
run_ctest() {
  local name="$1"
  shift
  local log="$LOG_DIR/$name.log"
  echo "=== test.sh: ctest ($name): ctest $*"
  ctest "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  # "100% tests passed, 0 tests failed out of 42"
  local line
  line="$(grep -E '[0-9]+% tests passed, [0-9]+ tests? failed out of [0-9]+' "$log" | tail -n 1)"
  if [[ -n "$line" ]]; then
    local failed total
    failed="$(sed -E 's/.* ([0-9]+) tests? failed out of ([0-9]+).*/\1/' <<<"$line")"
    total="$(sed -E 's/.* failed out of ([0-9]+).*/\1/' <<<"$line")"
    total_failed=$((total_failed + failed))
    total_passed=$((total_passed + total - failed))
  fi
  if [[ $rc -ne 0 ]]; then
    problems+=("ctest ($name) exited $rc")
  fi
}

summary() {
  echo
  if [[ ${#problems[@]} -ne 0 ]]; then
    local p
    for p in "${problems[@]}"; do
      echo "test.sh: FAILED: $p"
    done
  fi
  echo "summary: ${total_passed} passed, ${total_failed} failed"
}

if ! scripts/setup.sh; then
  problems+=("scripts/setup.sh failed")
  summary
  exit 1
fi

echo "=== test.sh: build (build/)"
if scripts/build.sh "$ROOT/build"; then
  run_ctest main --test-dir build --output-on-failure --no-tests=error -j2
else
  problems+=("build of build/ failed")
fi

echo "=== test.sh: sanitizer build (build-asan/)"
if scripts/build.sh "$ROOT/build-asan" -DFLURRY_SANITIZE=ON -DFLURRY_BENCHMARKS=OFF \
    -DFLURRY_INTEGRATION_TESTS=OFF; then
  run_ctest asan --test-dir build-asan --output-on-failure --no-tests=error -j2 -L unit
else
  problems+=("build of build-asan/ failed")
fi

summary
if [[ ${#problems[@]} -ne 0 || $total_failed -ne 0 ]]; then
  exit 1
fi
exit 0
