#!/usr/bin/env bash
# The parent's --dir in clones on other hosts, measured on a test cluster of 1 host
# (scripts/cluster.sh) with local clones beside it. Root only.
#   bench/remote_files_bench.sh [BUILD_DIR] [MIB]   (defaults: build, 64)
# The guest is tests/guest/cluster_files: the parent opens /input.bin (MIB MiB) and reads 5
# bytes; each clone reads the rest from the inherited fd, stats and lists files, writes one of
# its own. Prints, for N = 1 and 4 clones (all on host1), local and --cluster, 3 runs each: the
# run's wall time (parent start to exit, sf_join included) and, for the cluster, the bytes
# host1's interface received (the file once per host with the host cache, plus the clones'
# memory).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$here/build}"
mib="${2:-64}"
flurry="$build/apps/flurry/flurry"
export FLURRY_BUILD="$build" FLURRY_CLUSTER_NAME=files FLURRY_CLUSTER_SUBNET=10.85.0
dir="$(mktemp -d /tmp/flurry-files-bench.XXXXXX)"
cleanup() {
  "$here/scripts/cluster.sh" down || true
  rm -rf "$dir"
}
trap cleanup EXIT
head -c "$((mib << 20))" /dev/urandom >"$dir/input.bin"
mkdir "$dir/sub"
printf 'note\n' >"$dir/sub/note.txt"
printf 'later\n' >"$dir/sub/later.txt"
cluster="$("$here/scripts/cluster.sh" up 1 | tail -n 1)"
echo "cluster: $cluster (1 host x 8 slots); /input.bin: $mib MiB"

rx() { ip netns exec files-host1 cat /sys/class/net/eth0/statistics/rx_bytes; }
for n in 1 4; do
  for where in local cluster; do
    args=(run --dir "$dir:rw")
    [[ $where == cluster ]] && args+=(--cluster "$cluster")
    for run in 1 2 3; do
      before="$(rx)"
      start="$(date +%s%N)"
      out="$("$flurry" "${args[@]}" "$build/tests/guest/cluster_files" "$n")"
      ms="$(( ($(date +%s%N) - start) / 1000000 ))"
      ok="$(grep -c ' status=0 kind=1$' <<<"$out" || true)"
      moved=""
      [[ $where == cluster ]] && moved=" host1 received $(( ($(rx) - before) >> 20 )) MiB"
      echo "N=$n $where run $run: ${ms} ms, $ok/$n clones ok$moved"
    done
  done
done
