# Sourced by the bench/*_netns.sh scripts: two test hosts as network namespaces A and B joined
# by a veth pair, A = ${SUBNET}.1, B = ${SUBNET}.2, removed at exit (with what `cleanup_extra`
# does first, if the script defines it). Root only.
# Usage: source bench/netns_hosts.sh PREFIX SUBNET   (sets A and B)
netns_prefix="$1"
netns_subnet="$2"
A="$netns_prefix-a-$$"
B="$netns_prefix-b-$$"
netns_cleanup() {
  if declare -F cleanup_extra > /dev/null; then cleanup_extra; fi
  ip netns del "$A" 2>/dev/null || true
  ip netns del "$B" 2>/dev/null || true
}
trap netns_cleanup EXIT
ip netns add "$A"
ip netns add "$B"
ip link add "v$$a" netns "$A" type veth peer name "v$$b" netns "$B"
ip -n "$A" addr add "$netns_subnet.1/24" dev "v$$a"
ip -n "$B" addr add "$netns_subnet.2/24" dev "v$$b"
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set "v$$a" up
ip -n "$B" link set "v$$b" up
