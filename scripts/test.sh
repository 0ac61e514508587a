#!/usr/bin/env bash
# Installs dependencies, builds flurry and runs every test:
#   1. build/       (RelWithDebInfo): all CTest tests (unit + integration on both backends,
#                   kvm.* and seccomp.*), 2 at a time. Without a usable /dev/kvm, ctest skips
#                   the tests labelled kvm and scripts/kvm_in_qemu.sh runs them against the
#                   /dev/kvm of a QEMU TCG guest with emulated nested SVM (docs/testing.md);
#   2. build-asan/  (ASan + UBSan):   the unit tests (ctest -L unit).
# Exits non-zero if anything fails, and when the KVM backend tests could not run at all.
# The last line is a summary: "summary: N passed, M failed".
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1

LOG_DIR="$(mktemp -d)"
trap 'rm -rf "$LOG_DIR"' EXIT

total_passed=0
total_failed=0
problems=()
kvm_where="were NOT run: test.sh stopped before them"  # where the KVM backend tests ran

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
  # ctest's closing list, "  123 - Suite.Name (Failed)", repeated in the summary so that
  # the last lines of a long log still say which tests failed.
  local failed_test
  while IFS= read -r failed_test; do
    problems+=("ctest ($name): ${failed_test}")
  done < <(sed -n '/^The following tests FAILED:/,/^$/{/^[[:space:]]*[0-9]\+ - /{s/^[[:space:]]*//;p}}' "$log")
}

# kvm_usable: /dev/kvm exists and opens read-write.
kvm_usable() {
  [[ -c /dev/kvm ]] && (exec 3<>/dev/kvm) 2>/dev/null
}

# run_kvm_in_qemu: the KVM backend tests of build/ under QEMU; adds their counts to the totals.
run_kvm_in_qemu() {
  local log="$LOG_DIR/kvm-in-qemu.log"
  echo "=== test.sh: KVM backend tests under QEMU TCG: scripts/kvm_in_qemu.sh --build build"
  scripts/kvm_in_qemu.sh --build "$ROOT/build" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  # "kvm-in-qemu: total passed=95 failed=0 rc=0"
  local line passed failed
  line="$(grep -E '^kvm-in-qemu: total passed=[0-9]+ failed=[0-9]+' "$log" | tail -n 1)"
  if [[ -n "$line" ]]; then
    passed="$(sed -E 's/.* passed=([0-9]+).*/\1/' <<<"$line")"
    failed="$(sed -E 's/.* failed=([0-9]+).*/\1/' <<<"$line")"
    local skipped=0
    if [[ "$line" =~ skipped=([0-9]+) ]]; then skipped="${BASH_REMATCH[1]}"; fi
    total_passed=$((total_passed + passed))
    total_failed=$((total_failed + failed))
    kvm_where="ran under QEMU TCG (nested SVM), $passed passed, $failed failed, $skipped skipped (reasons in the log above)"
    if [[ $rc -ne 0 ]]; then
      problems+=("scripts/kvm_in_qemu.sh exited $rc")
    fi
    # "kvm-in-qemu: vm_fork_test: FAILED Suite.Name" and unfinished tests, again in the summary.
    local failed_line
    while IFS= read -r failed_line; do
      problems+=("under QEMU: ${failed_line}")
    done < <(sed -nE 's/^kvm-in-qemu: (.*: (FAILED .*|[0-9]+ test\(s\) did not finish.*))$/\1/p' "$log")
  else
    local reason
    reason="$(sed -n 's/^kvm-in-qemu: error: //p' "$log" | tail -n 1)"
    kvm_where="were NOT run: ${reason:-scripts/kvm_in_qemu.sh exited $rc without a result}"
    problems+=("KVM backend tests $kvm_where")
  fi
}

summary() {
  echo
  echo "test.sh: KVM backend tests $kvm_where"
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
  if kvm_usable; then
    run_ctest main --test-dir build --output-on-failure --no-tests=error -j2
    kvm_where="ran natively on /dev/kvm"
  else
    echo "=== test.sh: no usable /dev/kvm: the tests labelled kvm run under QEMU below"
    run_ctest main --test-dir build --output-on-failure --no-tests=error -j2 -LE '^kvm$'
    run_kvm_in_qemu
  fi
else
  problems+=("build of build/ failed")
  kvm_where="were NOT run: the build of build/ failed"
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
