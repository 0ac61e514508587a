#!/usr/bin/env bash
# Fault service time of a remote page between two network namespaces joined by a veth pair
# (as two test hosts of the cluster are): bench/page_fetch_bench serves a 256 MiB image in one
# namespace and fetches from the other. Root only. Usage: bench/page_fetch_netns.sh [BUILD_DIR]
# Prints one line per run: single pages, then runs of 8 (the default prefetch).
set -euo pipefail
BUILD="${1:-$(cd "$(dirname "$0")/.." && pwd)/build}"
BENCH="$BUILD/bench/page_fetch_bench"
cleanup_extra() { [[ -n "${SERVER:-}" ]] && kill "$SERVER" 2>/dev/null || true; }
source "$(dirname "$0")/netns_hosts.sh" flurry-bench 10.251.0
READY=$(mktemp)
ip netns exec "$A" "$BENCH" serve 10.251.0.1:7400 256 > "$READY" &
SERVER=$!
for _ in $(seq 100); do grep -q serving "$READY" && break; sleep 0.1; done
rm -f "$READY"
ip netns exec "$B" "$BENCH" fetch 10.251.0.1:7400 256 20000 1
ip netns exec "$B" "$BENCH" fetch 10.251.0.1:7400 256 5000 8
