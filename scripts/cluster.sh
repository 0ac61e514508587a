#!/usr/bin/env bash
# A test cluster on this machine: N hosts as network namespaces on a bridge, each running its
# own flurryd with 8 slots and a state dir of its own. Root only.
#
#   scripts/cluster.sh up N      make host1..hostN; prints the cluster file's path on its last line
#   scripts/cluster.sh stop hostK   kill that host's daemon and everything it runs (a crashed host)
#   scripts/cluster.sh down      remove every host, the bridge and the cluster's directory
#
# Environment: FLURRY_BUILD (default build) holds apps/flurry/{flurry,flurryd};
# FLURRY_CLUSTER_NAME (default "flurry") names the bridge, the directory
# /run/flurry-cluster-NAME and, when not the default, prefixes the namespaces ("NAME-host1") so
# that two clusters can exist at once; FLURRY_CLUSTER_SUBNET (default 10.88.0) is the /24 the
# hosts live on: the machine's own namespace is .1 on the bridge, hostK is .(10+K).
# FLURRY_CLUSTER_BACKEND, when set, is passed to every flurryd as --backend, and
# FLURRY_CLUSTER_WARM as --warm (clone VMMs started ahead; flurryd's default: one per slot).
# FLURRY_CLUSTER_MTU (default 9000: jumbo frames, as cluster networks have them) is the MTU of
# the bridge and every host's link; page pushes (multicast) are datagrams of up to 60 KiB,
# which a 1500-byte MTU cuts into 42 IP fragments (docs/perf.md, "Page pushes").
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${FLURRY_BUILD:-$here/build}"
[[ "$build" = /* ]] || build="$here/$build"
name="${FLURRY_CLUSTER_NAME:-flurry}"
subnet="${FLURRY_CLUSTER_SUBNET:-10.88.0}"
dir="/run/flurry-cluster-$name"
bridge="fb-${name:0:12}"
port=7070
mtu="${FLURRY_CLUSTER_MTU:-9000}"

netns_of() {  # hostK -> its namespace's name
  if [[ "$name" == flurry ]]; then echo "$1"; else echo "$name-$1"; fi
}

die() { echo "cluster.sh: $*" >&2; exit 1; }

kill_host() {  # everything running in the host's namespace, as if the machine died
  local ns; ns="$(netns_of "$1")"
  local pids; pids="$(ip netns pids "$ns" 2>/dev/null || true)"
  [[ -n "$pids" ]] && kill -KILL $pids 2>/dev/null || true
  for _ in $(seq 1 100); do
    [[ -z "$(ip netns pids "$ns" 2>/dev/null || true)" ]] && return 0
    sleep 0.05
  done
  return 0
}

up() {
  local n="$1"
  [[ "$n" =~ ^[0-9]+$ && "$n" -ge 1 && "$n" -le 200 ]] || die "up: N must be 1..200"
  [[ "$(id -u)" -eq 0 ]] || die "needs root (network namespaces)"
  [[ -x "$build/apps/flurry/flurry" && -x "$build/apps/flurry/flurryd" ]] ||
    die "no flurry/flurryd in $build/apps/flurry (build first)"
  [[ -e "$dir" ]] && die "$dir exists: the cluster is up already (scripts/cluster.sh down)"
  mkdir -p "$dir"
  chmod 700 "$dir"
  [[ "$mtu" =~ ^[0-9]+$ && "$mtu" -ge 1280 && "$mtu" -le 65535 ]] || die "bad FLURRY_CLUSTER_MTU"
  ip link add "$bridge" type bridge
  ip link set "$bridge" mtu "$mtu"
  ip addr add "$subnet.1/24" dev "$bridge"
  ip link set "$bridge" up
  local hosts=()
  for k in $(seq 1 "$n"); do
    local ns; ns="$(netns_of "host$k")"
    local ip="$subnet.$((10 + k))"
    ip netns add "$ns"
    # A veth of a cluster just taken down may still be going (a namespace is torn down
    # asynchronously): wait for its name to be free.
    for _ in $(seq 1 100); do
      ip link show "fv-${name:0:6}-$k" > /dev/null 2>&1 || break
      sleep 0.05
    done
    ip link add "fv-${name:0:6}-$k" type veth peer name eth0 netns "$ns"
    ip link set "fv-${name:0:6}-$k" mtu "$mtu"
    ip -n "$ns" link set eth0 mtu "$mtu"
    ip link set "fv-${name:0:6}-$k" master "$bridge" up
    ip -n "$ns" link set lo up
    ip -n "$ns" addr add "$ip/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via "$subnet.1"
    hosts+=(--host "host$k=$ip:$port:8")
  done
  "$build/apps/flurry/flurry" cluster init "$dir" --name "$name" "${hosts[@]}" > "$dir/init.log"
  local backend=()
  [[ -n "${FLURRY_CLUSTER_BACKEND:-}" ]] && backend=(--backend "$FLURRY_CLUSTER_BACKEND")
  [[ -n "${FLURRY_CLUSTER_WARM:-}" ]] && backend+=(--warm "$FLURRY_CLUSTER_WARM")
  for k in $(seq 1 "$n"); do
    local ns; ns="$(netns_of "host$k")"
    mkdir -p "$dir/state/host$k"
    ip netns exec "$ns" setsid "$build/apps/flurry/flurryd" --cluster "$dir/cluster.json" \
      --name "host$k" --state-dir "$dir/state/host$k" "${backend[@]}" \
      > "$dir/host$k.log" 2>&1 < /dev/null &
  done
  for k in $(seq 1 "$n"); do
    for _ in $(seq 1 200); do
      grep -q "listening" "$dir/host$k.log" 2>/dev/null && break
      sleep 0.05
    done
    grep -q "listening" "$dir/host$k.log" || die "host$k's flurryd did not start: $(cat "$dir/host$k.log")"
  done
  echo "$dir/cluster.json"
}

stop() {
  local host="$1"
  [[ "$host" =~ ^host[0-9]+$ ]] || die "stop: expected hostK"
  ip netns list | grep -qw "$(netns_of "$host")" || die "no host $host"
  kill_host "$host"
}

down() {
  for ns in $(ip netns list | awk '{print $1}'); do
    local host
    if [[ "$name" == flurry ]]; then host="$ns"; else host="${ns#"$name"-}"; fi
    [[ "$host" =~ ^host[0-9]+$ && "$(netns_of "$host")" == "$ns" ]] || continue
    kill_host "$host"
    # Delete the veth pair now: `ip netns del` would leave it to the kernel's asynchronous
    # namespace cleanup, and a cluster of the same name brought up at once would find its
    # name taken ("RTNETLINK answers: File exists").
    ip link del "fv-${name:0:6}-${host#host}" 2> /dev/null || true
    ip netns del "$ns"
  done
  ip link del "$bridge" 2>/dev/null || true
  rm -rf "$dir"
}

case "${1:-}" in
  up) up "${2:-}" ;;
  stop) stop "${2:-}" ;;
  down) down ;;
  *) die "usage: scripts/cluster.sh up N | stop hostK | down" ;;
esac
