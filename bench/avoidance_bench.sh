#!/usr/bin/env bash
# What each memory-on-demand avoidance heuristic saves (src/memory/avoidance.h): the bytes moved
# per clone against the pages its work read, with every heuristic (all), with none, and with
# each one switched off in turn. Root only.
#   bench/avoidance_bench.sh [BUILD_DIR] [MIB] [CLONES]   (default build, 64, 4)
# The job is tests/guest/avoid_work (its header says what it touches: half of an MIB MiB array,
# 8 MiB fresh, 1 MiB getrandom(2) into an old buffer, 4 MiB never written). Places:
#   remote   CLONES clones on a 4-host test cluster (scripts/cluster.sh, a cluster of its own):
#            flurry run --cluster C --clone-stats --clone-avoid SETTING avoid_work clone CLONES MIB
#   restore  the same work in a VM restored on this host from a page server on this host
#            (flurry ctl SOCK serve 127.0.0.1:0; flurry restore --stats --avoid SETTING), which
#            also read(2)s a 1 MiB file from its --dir (remote clones get no --dir here)
#   local    clones on this host (flurry run without --cluster): they inherit the parent's
#            memory copy-on-write and fetch nothing; the script shows that --clone-stats has
#            nothing to report for them
# One line per clone (per restore): the place, the setting, the counters (faults, fetched,
# requests, bytes_received, zero, fresh, overwritten, zero_elided), read_pages (the pages the
# work read, from the guest), work_ms, and same=yes when its result line is the one every
# setting must give. For remote runs, also the bytes the hosts' interfaces received in all.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$here/build}"
mib="${2:-64}"
clones="${3:-4}"
flurry="$build/apps/flurry/flurry"
guest="$build/tests/guest/avoid_work"
work="$(mktemp -d)"
parent=""
export FLURRY_BUILD="$build" FLURRY_CLUSTER_NAME=avoid FLURRY_CLUSTER_SUBNET=10.86.0
cleanup() {
  [[ -n "$parent" ]] && kill "$parent" 2>/dev/null || true
  "$here/scripts/cluster.sh" down || true
  rm -rf "$work"
}
trap cleanup EXIT

# SETTING (flurry's --avoid) and its label: all, none, and each heuristic switched off alone.
settings=(all none fresh,overwritten zero,overwritten zero,fresh)
label() {
  case "$1" in
    all) echo "all" ;; none) echo "none" ;; fresh,overwritten) echo "no-zero" ;;
    zero,overwritten) echo "no-fresh" ;; zero,fresh) echo "no-overwritten" ;;
  esac
}
counters='faults fetched requests bytes_received zero fresh overwritten zero_elided'
# "k1=v1 k2=v2 ..." -> the values of $counters, in order, as "k=v" words.
pick() { for k in $counters; do grep -o "\b$k=[0-9.]*" <<<"$1" | head -n 1; done | tr '\n' ' '; }
expected=""  # the result line (without work_ms) of the first run with all heuristics
same() {
  if [[ -z "$expected" ]]; then expected="$1"; fi
  [[ "$1" == "$expected" ]] && echo yes || echo "NO ($1)"
}

echo "MiB=$mib clones=$clones cores=$(nproc) $(date -u +%FT%TZ)"
cluster="$("$here/scripts/cluster.sh" up 4 | tail -n 1)"
rx() { ip netns exec "avoid-host$1" cat /sys/class/net/eth0/statistics/rx_bytes; }

for setting in "${settings[@]}"; do
  before=0
  for k in 1 2 3 4; do before=$((before + $(rx "$k"))); done
  # Without pushes: each clone's bytes are then what it fetched itself.
  "$flurry" run --mem 1G --cluster "$cluster" --clone-stats --clone-multicast off \
    --clone-avoid "$setting" "$guest" \
    clone "$clones" "$mib" > "$work/out" 2> "$work/err" || { cat "$work/err"; exit 1; }
  after=0
  for k in 1 2 3 4; do after=$((after + $(rx "$k"))); done
  for id in $(sed -n 's/^flurry: clone \([0-9]*\): memory on demand:.*/\1/p' "$work/err"); do
    stats="$(grep "^flurry: clone $id: memory on demand:" "$work/err")"
    result="$(sed -n "s/^\[clone $id\] \(sum=.*\) read_pages=.*/\1/p" "$work/out")"
    pages="$(sed -n "s/^\[clone $id\] .*read_pages=\([0-9]*\)/\1/p" "$work/out")"
    ms="$(sed -n "s/^\[clone $id\] work_ms=//p" "$work/out")"
    echo "remote $(label "$setting") clone=$id $(pick "$stats")read_pages=$pages work_ms=$ms" \
      "same=$(same "$result")"
  done
  echo "remote $(label "$setting") hosts_rx_bytes=$((after - before)) $(tail -n 1 "$work/out")"
done
"$here/scripts/cluster.sh" down

# The same work restored here from a page server here, with a file to read(2).
mkdir "$work/root"
head -c $((1 << 20)) /dev/urandom > "$work/root/input"
"$flurry" run --mem 1G --dir "$work/root" --api "$work/api.sock" "$guest" sleep 3 "$mib" \
  /input > "$work/parent.out" 2>&1 &
parent=$!
for _ in $(seq 600); do grep -q ready "$work/parent.out" 2>/dev/null && break; sleep 0.1; done
"$flurry" ctl "$work/api.sock" pause > /dev/null
served="$("$flurry" ctl "$work/api.sock" serve 127.0.0.1:0 | sed -n 's/^serving: //p')"
file_expected=""
for setting in "${settings[@]}"; do
  "$flurry" restore --stats --avoid "$setting" --dir "$work/root" "tcp://$served" \
    > "$work/out" 2> "$work/err" || { cat "$work/err"; exit 1; }
  result="$(sed -n 's/^\(sum=.*\) read_pages=.*/\1/p' "$work/out")"
  [[ -z "$file_expected" ]] && file_expected="$result"
  same_file=yes
  [[ "$result" == "$file_expected" ]] || same_file="NO ($result)"
  echo "restore $(label "$setting") $(pick "$(cat "$work/err")")read_pages=$(sed -n \
    's/.*read_pages=//p' "$work/out") work_ms=$(sed -n 's/^work_ms=//p' "$work/out")" \
    "same=$same_file"
done
"$flurry" ctl "$work/api.sock" resume > /dev/null
wait "$parent" || true
parent=""
echo "restore: the parent itself (no restore) $(grep -o 'read_pages=.*' "$work/parent.out")" \
  "work_ms=$(sed -n 's/^work_ms=//p' "$work/parent.out")"

# Clones on this host: copy-on-write, nothing fetched, nothing to count.
"$flurry" run --mem 1G --clone-stats "$guest" clone "$clones" "$mib" > "$work/out" 2> "$work/err"
echo "local clones: $(grep -c '^\[clone [0-9]*\] sum=' "$work/out") results," \
  "$(grep -c 'memory on demand' "$work/err" || true) memory-on-demand reports;" \
  "work_ms: $(sed -n 's/^\[clone [0-9]*\] work_ms=//p' "$work/out" | tr '\n' ' ')" \
  "same=$(same "$(sed -n 's/^\[clone [0-9]*\] \(sum=.*\) read_pages=.*/\1/p' "$work/out" |
    head -n 1)")"
