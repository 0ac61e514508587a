#!/usr/bin/env bash
# Runtime of a job with a large working set in a VM restored with memory on demand, from a page
# server on another test host (network namespace) vs on the same host, vs eagerly restored
# memory; and whether prefetching pays. The job is tests/guest/on_demand.c: after the restore
# it reads its whole MIB MiB array once (sequentially), allocates 8 MiB fresh and reads 64 KiB
# from a file; it prints work_ms (measured in the guest). Root only.
# Usage: bench/remote_restore_netns.sh [BUILD_DIR] [MIB]   (default build, 256)
set -euo pipefail
BUILD="${1:-$(cd "$(dirname "$0")/.." && pwd)/build}"
MIB="${2:-256}"
FLURRY="$BUILD/apps/flurry/flurry"
GUEST="$BUILD/tests/guest/on_demand"
WORK=$(mktemp -d)
cleanup_extra() {
  [[ -n "${PARENT:-}" ]] && kill "$PARENT" 2>/dev/null || true
  rm -rf "$WORK"
}
source "$(dirname "$0")/netns_hosts.sh" flurry-rr 10.252.0
mkdir "$WORK/root"
head -c 65536 /dev/urandom > "$WORK/root/input"

# The parent (on host A), paused in its sleep after "ready", served from host A and snapshotted.
ip netns exec "$A" "$FLURRY" run --dir "$WORK/root" --api "$WORK/api.sock" "$GUEST" "$MIB" \
  /input 1 > "$WORK/parent.out" 2>&1 &
PARENT=$!
for _ in $(seq 600); do grep -q ready "$WORK/parent.out" 2>/dev/null && break; sleep 0.1; done
"$FLURRY" ctl "$WORK/api.sock" pause > /dev/null
"$FLURRY" ctl "$WORK/api.sock" snapshot "$WORK/snap" > /dev/null
SERVE_A=$("$FLURRY" ctl "$WORK/api.sock" serve 10.252.0.1:0 | sed -n 's/^serving: //p')
SERVE_LOCAL=$("$FLURRY" ctl "$WORK/api.sock" serve 127.0.0.1:0 | sed -n 's/^serving: //p')

run() {  # label, then the restore command (in B or here)
  local label="$1"
  shift
  local out
  out=$("$@" 2>&1)
  printf '%-40s %s %s\n' "$label" "$(grep -o 'work_ms=[0-9.]*' <<<"$out")" \
    "$(grep -o 'faults=[0-9]* fetched=[0-9]* prefetched=[0-9]* requests=[0-9]* fetch_us=[0-9.]*' <<<"$out" || true) $(grep -o 'readahead=[0-9]*' <<<"$out" || true)"
}
echo "MiB=$MIB, $(nproc) cores"
run "eager, from the snapshot dir" "$FLURRY" restore --memory eager --stats "$WORK/snap"
run "on demand, snapshot dir" "$FLURRY" restore --memory on-demand --stats "$WORK/snap"
run "other host, prefetch 8, no readahead" ip netns exec "$B" "$FLURRY" restore --prefetch 8 \
  --readahead 0 --stats "tcp://$SERVE_A"
for p in 1 8 32; do
  run "on demand, same host, prefetch $p" ip netns exec "$A" "$FLURRY" restore --prefetch "$p" \
    --stats "tcp://$SERVE_LOCAL"
  run "on demand, other host, prefetch $p" ip netns exec "$B" "$FLURRY" restore --prefetch "$p" \
    --stats "tcp://$SERVE_A"
done
"$FLURRY" ctl "$WORK/api.sock" resume > /dev/null
wait "$PARENT" || true
PARENT=
run_parent=$(grep -o 'work_ms=[0-9.]*' "$WORK/parent.out")
printf '%-40s %s\n' "the parent itself (no restore)" "$run_parent"
