#!/usr/bin/env bash
# Clones across hosts, measured on a test cluster of 4 hosts (scripts/cluster.sh: network
# namespaces on a bridge, one flurryd each) with the local-host numbers beside them. Root only.
#   bench/cluster_bench.sh [BUILD_DIR]   (default build)
# Prints, per measurement, the raw values of each run:
#   1. clone latency (sf_clone -> all N clones executing), 256 MiB touched by the parent,
#      N = 1, 8, 32: bench_clone, 5 runs each, local and --cluster; and the time of the
#      sf_request_ticket before it; then the same with clones that stay 300 ms before they end
#      ("held": as clones with work to do, whose ends do not overlap the others' starts);
#   2. a compute job on a 256 MiB working set (cluster_where 4 0 256: each clone sums the
#      parent's 256 MiB once, work_ms = that sum's time), local and --cluster, 3 runs each;
#   3. bytes each host's interface received for that job vs the 256 MiB each clone read, the
#      bytes this machine (the parent's page server) sent into the cluster, and the datagrams
#      (page pushes) the hosts' sockets dropped for want of room (UDP RcvbufErrors, all hosts);
#   the job on the cluster runs with page pushes (multicast, the default) and without
#   (--clone-multicast off). FLURRY_CLUSTER_MTU sets the links' MTU (scripts/cluster.sh).
#   FLURRY_BENCH_LINK_RATE (e.g. 2gbit) limits what this machine sends into the cluster (a
#   tc tbf on the bridge) for the 256 MiB job: a network slower than the hosts.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$here/build}"
flurry="$build/apps/flurry/flurry"
export FLURRY_BUILD="$build" FLURRY_CLUSTER_NAME=bench FLURRY_CLUSTER_SUBNET=10.87.0
cleanup() { "$here/scripts/cluster.sh" down || true; }
trap cleanup EXIT
cluster="$("$here/scripts/cluster.sh" up 4 | tail -n 1)"
echo "cluster: $cluster (4 hosts x 8 slots)"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

for hold in 0 300; do
 for n in 1 8 32; do
  for where in local cluster; do
    args=(run --mem 1G)
    [[ $where == cluster ]] && args+=(--cluster "$cluster")
    values=()
    requests=()
    for _ in 1 2 3 4 5; do
      sleep 0.5  # the hosts make their clone VMMs ahead again once quiet (flurryd --warm)
      out="$("$flurry" "${args[@]}" "$build/bench/guest/bench_clone" 256 "$n" "$hold")"
      ns="$(sed -n 's/^clone_latency_ns=//p' <<<"$out")"
      values+=("$(awk -v ns="$ns" 'BEGIN {printf "%.1f", ns / 1e6}')")
      ns="$(sed -n 's/^ticket_request_ns=//p' <<<"$out")"
      requests+=("$(awk -v ns="$ns" 'BEGIN {printf "%.2f", ns / 1e6}')")
    done
    label="N=$n $where"
    [[ $hold != 0 ]] && label+=" held ${hold}ms"
    echo "clone latency $label: ${values[*]} ms (median $(printf '%s\n' "${values[@]}" | median))"
    if [[ $hold == 0 ]]; then
      echo "ticket request $label: ${requests[*]} ms (median $(printf '%s\n' "${requests[@]}" | median))"
    fi
  done
 done
done

rx() { ip netns exec "bench-host$1" cat /sys/class/net/eth0/statistics/rx_bytes; }
tx_here() { cat /sys/class/net/fb-bench/statistics/tx_bytes; }
# The hosts' UDP RcvbufErrors, summed (the second "Udp:" line of /proc/net/snmp, field 6).
rcvbuf_errors() {
  local sum=0 k
  for k in 1 2 3 4; do
    sum=$((sum + $(ip netns exec "bench-host$k" awk '/^Udp:/ {n++} n == 2 {print $6; exit}' \
      /proc/net/snmp)))
  done
  echo "$sum"
}
if [[ -n ${FLURRY_BENCH_LINK_RATE:-} ]]; then
  tc qdisc add dev fb-bench root tbf rate "$FLURRY_BENCH_LINK_RATE" burst 512k latency 20ms
  echo "256 MiB job: this machine sends into the cluster at most $FLURRY_BENCH_LINK_RATE"
fi
for where in local cluster cluster-no-multicast; do
  args=(run --mem 1G)
  [[ $where == cluster* ]] && args+=(--cluster "$cluster")
  [[ $where == cluster-no-multicast ]] && args+=(--clone-multicast off)
  for run in 1 2 3; do
    before=()
    for k in 1 2 3 4; do before+=("$(rx "$k")"); done
    sent_before="$(tx_here)"
    dropped_before="$(rcvbuf_errors)"
    out="$("$flurry" "${args[@]}" "$build/tests/guest/cluster_where" 4 0 256)"
    work="$(sed -n 's/.*work_ms=//p' <<<"$out" | tr '\n' ' ')"
    moved=""
    if [[ $where == cluster* ]]; then
      for k in 1 2 3 4; do moved+="host$k=$(( ($(rx "$k") - ${before[$((k - 1))]}) >> 20 ))MiB "; done
      moved+="sent=$(( ($(tx_here) - sent_before) >> 20 ))MiB"
      moved+=" pushes dropped=$(( $(rcvbuf_errors) - dropped_before ))"
    fi
    echo "256 MiB job, 4 clones, $where, run $run: work_ms per clone: $work ${moved:+received: $moved}"
  done
done
