#!/usr/bin/env bash
# Runs flurry's KVM-backend tests on a machine without /dev/kvm: boots a Debian kernel in
# QEMU with pure software emulation (TCG), whose emulated AMD CPU has SVM, loads kvm + kvm_amd
# there, and runs GoogleTest binaries against that /dev/kvm with FLURRY_BACKEND=kvm.
#
# Usage: scripts/kvm_in_qemu.sh [--build DIR] [BINARY...]
#   --build DIR  the build directory (default: <repo>/build)
#   BINARY       a gtest binary: a path, or a name under DIR/tests/integration/
#                (default: every DIR/tests/integration/*_test)
#
# The checkout (and the build directory, when it lies outside the checkout) is shared into the
# guest read-only over 9p at the same path as on the host, so the absolute paths compiled into
# the test binaries (FLURRY_BIN, GUEST_DIR, FIXTURE_DIR) resolve. /tmp in the guest is a tmpfs.
# Each binary runs in its own directory, like under ctest.
#
# Output: the guest console (kernel messages and every binary's gtest output) as it runs, then
# one line per binary and a total, for scripts to parse:
#   kvm-in-qemu: integration_test passed=46 failed=0 rc=0 attempts=1 wall=45s
#   kvm-in-qemu: total passed=95 failed=0 rc=0
# "failed" includes the tests that never finished (a binary that hung or crashed). rc is the
# binary's exit status, 124 when it hung. wall: guest seconds of its attempts that ended. Errors that stop the tests from running at all are
# printed as "kvm-in-qemu: error: REASON".
# Exit status: 0 all passed; 1 a test failed or a binary hung; 2 the tests could not run
# (QEMU or busybox missing, no kernel, no /dev/kvm in the guest, bad arguments).
#
# Hangs: QEMU 7.2's emulation of nested SVM intermittently locks up the whole guest kernel
# (more often with 2 vCPUs; docs/testing.md). Two limits catch a hang: a binary that runs longer
# than KVM_IN_QEMU_TEST_TIMEOUT is killed inside the guest, and when the guest's heartbeat (a
# file it rewrites every 5 s) stops for KVM_IN_QEMU_STALL seconds, or a boot exceeds
# KVM_IN_QEMU_TIMEOUT, QEMU is killed. A binary that hung is run again once in a fresh boot
# (KVM_IN_QEMU_RETRIES), only with its tests that had not finished (--gtest_filter); the tests
# that finished keep their results.
#
# Knobs (environment):
#   KVM_IN_QEMU_CACHE=${XDG_CACHE_HOME:-/tmp}/flurry-kvm-in-qemu
#                                  cache: the Debian kernel package (downloaded once with
#                                  apt-get download, unpacked, never installed) and run dirs
#   KVM_IN_QEMU_KERNEL_PKG=        kernel package (default: what linux-image-amd64 depends on)
#   KVM_IN_QEMU_CPU=max,-mpx       QEMU -cpu: needs svm, npt and xsave, and no MPX (KVM's SVM
#                                  code rejects the MPX XCR0 bits; docs/testing.md)
#   KVM_IN_QEMU_SMP=1              guest vCPUs (2 is ~15 % faster but hangs more often)
#   KVM_IN_QEMU_MEM=4G             guest RAM
#   KVM_IN_QEMU_KVM_AMD_OPTS=      kvm_amd module parameters, e.g. "npt=0"
#   KVM_IN_QEMU_GTEST_FILTER=      --gtest_filter for every binary
#   KVM_IN_QEMU_TEST_TIMEOUT=900   per binary and attempt, seconds (inside the guest)
#   KVM_IN_QEMU_STALL=120          kill QEMU when the guest heartbeat stops this long, seconds
#   KVM_IN_QEMU_TIMEOUT=           per boot, seconds (default: 300 + TEST_TIMEOUT per binary)
#   KVM_IN_QEMU_RETRIES=1          fresh-boot retries of a binary that hung
#   KVM_IN_QEMU_KEEP=0             1: keep the run dir (console logs, per-binary logs)
# While QEMU runs, its monitor is on RUN_DIR/bootN/monitor.sock (e.g. "info registers -a").
# Host packages (scripts/setup.sh): qemu-system-x86 busybox-static cpio; apt for the kernel.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

CACHE="${KVM_IN_QEMU_CACHE:-${XDG_CACHE_HOME:-/tmp}/flurry-kvm-in-qemu}"
KERNEL_PKG="${KVM_IN_QEMU_KERNEL_PKG:-}"
CPU="${KVM_IN_QEMU_CPU:-max,-mpx}"
SMP="${KVM_IN_QEMU_SMP:-1}"
MEM="${KVM_IN_QEMU_MEM:-4G}"
KVM_AMD_OPTS="${KVM_IN_QEMU_KVM_AMD_OPTS:-}"
USER_FILTER="${KVM_IN_QEMU_GTEST_FILTER:-}"
TEST_TIMEOUT="${KVM_IN_QEMU_TEST_TIMEOUT:-900}"
STALL="${KVM_IN_QEMU_STALL:-120}"
BOOT_TIMEOUT="${KVM_IN_QEMU_TIMEOUT:-}"
RETRIES="${KVM_IN_QEMU_RETRIES:-1}"
KEEP="${KVM_IN_QEMU_KEEP:-0}"

log() { echo "kvm-in-qemu: $*"; }
die() {  # die REASON: the tests could not run at all
  echo "kvm-in-qemu: error: $*"
  exit 2
}
usage() { sed -n '6,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

# --- Arguments ----------------------------------------------------------------------------------
BUILD="$ROOT/build"
args=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --build) [[ $# -ge 2 ]] || { usage; exit 2; }; BUILD="$2"; shift 2 ;;
    --build=*) BUILD="${1#--build=}"; shift ;;
    -h|--help) usage; exit 0 ;;
    -*) usage; die "unknown option $1" ;;
    *) args+=("$1"); shift ;;
  esac
done
[[ -d "$BUILD" ]] || die "no build directory $BUILD (scripts/build.sh DIR)"
BUILD="$(cd "$BUILD" && pwd)"
if [[ ${#args[@]} -eq 0 ]]; then  # every integration test binary the build has
  for f in "$BUILD"/tests/integration/*_test; do
    [[ -x "$f" && -f "$f" ]] && args+=("$(basename "$f")")
  done
  [[ ${#args[@]} -gt 0 ]] || die "no integration test binaries in $BUILD/tests/integration"
fi

names=()                # basename of each binary: the key for everything below
declare -A bin=()       # name -> absolute path
for a in "${args[@]}"; do
  if [[ "$a" != */* && ! -e "$a" ]]; then a="$BUILD/tests/integration/$a"; fi
  [[ -x "$a" && -f "$a" ]] || die "no test binary $a (build it first)"
  a="$(cd "$(dirname "$a")" && pwd)/$(basename "$a")"
  n="$(basename "$a")"
  [[ -z "${bin[$n]:-}" ]] || die "two binaries named $n"
  names+=("$n")
  bin[$n]="$a"
done

shares=("$ROOT")        # host dirs mounted read-only in the guest at the same path
[[ "$BUILD/" == "$ROOT/"* ]] || shares+=("$BUILD")
for n in "${names[@]}"; do
  inside=0
  for s in "${shares[@]}"; do
    if [[ "${bin[$n]}" == "$s/"* ]]; then inside=1; fi
  done
  [[ $inside -eq 1 ]] || die "${bin[$n]} is outside $ROOT and $BUILD, the guest cannot see it"
done

for tool in qemu-system-x86_64 cpio gzip dpkg-deb ldd; do
  command -v "$tool" >/dev/null || die "$tool not found (scripts/setup.sh installs it)"
done
BUSYBOX=/bin/busybox    # busybox-static
if [[ ! -x "$BUSYBOX" ]] || ldd "$BUSYBOX" >/dev/null 2>&1; then
  die "no static $BUSYBOX (apt-get install busybox-static)"
fi

mkdir -p "$CACHE"
RUN="$(mktemp -d "$CACHE/run.XXXXXX")"
qemu_pid=""
tail_pid=""
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() {
  if [[ -n "$qemu_pid" ]]; then kill -KILL "$qemu_pid" 2>/dev/null || true; fi
  if [[ -n "$tail_pid" ]]; then kill "$tail_pid" 2>/dev/null || true; fi
  if [[ "$KEEP" == 1 ]]; then echo "kvm-in-qemu: run dir kept: $RUN"; else rm -rf "$RUN"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- Kernel: a Debian image package, unpacked into the cache ------------------------------------
kernel_pkg() {
  apt-cache depends linux-image-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}
if [[ -z "$KERNEL_PKG" ]]; then
  KERNEL_PKG="$(kernel_pkg || true)"
  if [[ -z "$KERNEL_PKG" && "$(id -u)" -eq 0 ]]; then
    log "apt-get update (no package lists)"
    apt-get update -qq >/dev/null 2>&1 || true
    KERNEL_PKG="$(kernel_pkg || true)"
  fi
  if [[ -z "$KERNEL_PKG" ]]; then  # offline: whatever was unpacked before
    KERNEL_PKG="$(find "$CACHE/kernel" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' 2>/dev/null \
      | sort -V | tail -n 1)"
  fi
  [[ -n "$KERNEL_PKG" ]] || die "cannot tell which kernel package to use (apt-cache depends linux-image-amd64 failed)"
fi
KROOT="$CACHE/kernel/$KERNEL_PKG"
if [[ ! -f "$KROOT/.unpacked" ]]; then
  log "downloading $KERNEL_PKG"
  dl="$(mktemp -d "$CACHE/download.XXXXXX")"
  if ! (cd "$dl" && chmod 755 . && timeout 600 apt-get download -q "$KERNEL_PKG"); then
    rm -rf "$dl"
    die "apt-get download $KERNEL_PKG failed"
  fi
  rm -rf "$KROOT"
  mkdir -p "$KROOT"
  dpkg-deb -x "$dl"/*.deb "$KROOT" || { rm -rf "$dl" "$KROOT"; die "cannot unpack $KERNEL_PKG"; }
  rm -rf "$dl"
  touch "$KROOT/.unpacked"
  # Only the current kernel stays in the cache.
  find "$CACHE/kernel" -mindepth 1 -maxdepth 1 -type d ! -name "$KERNEL_PKG" -exec rm -rf {} +
fi
VMLINUZ="$(find "$KROOT/boot" -name 'vmlinuz-*' | head -n 1)"
KMOD="$(find "$KROOT/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n 1)"
[[ -n "$VMLINUZ" && -n "$KMOD" ]] || die "no kernel or modules in $KROOT"

# --- initramfs: busybox, the modules, the test binaries' shared libraries, init ----------------
IRD="$RUN/initrd"
mkdir -p "$IRD"/{bin,proc,sys,dev,tmp,kiq,lib/modules,etc}
cp "$BUSYBOX" "$IRD/bin/busybox"
for applet in $("$BUSYBOX" --list); do
  [[ "$applet" == busybox ]] || ln -s busybox "$IRD/bin/$applet"
done
ln -s bin "$IRD/sbin"

declare -A seen=()
modules=()
module_file() { find "$KMOD/kernel" \( -name "$1.ko" -o -name "${1//_/-}.ko" \) | head -n 1; }
add_module() {  # add_module NAME [optional]: NAME after its dependencies (.modinfo "depends=")
  local name="$1" optional="${2:-}" file deps dep
  [[ -z "${seen[$name]:-}" ]] || return 0
  seen[$name]=1
  file="$(module_file "$name")"
  if [[ -z "$file" ]]; then
    if ! grep -qE "/(${name}|${name//_/-})\.ko$" "$KMOD/modules.builtin"; then
      [[ -n "$optional" ]] || die "kernel module $name is neither in $KMOD nor built in"
      log "kernel module $name is neither in $KMOD nor built in: left out"
    fi
    return 0
  fi
  deps="$(tr '\0' '\n' <"$file" | sed -n 's/^depends=//p' | head -n 1)"
  for dep in ${deps//,/ }; do add_module "$dep"; done
  modules+=("$file")
}
# virtio + 9p: the shares; overlay: clones' copy-on-write --dir views; kvm_amd: /dev/kvm.
for m in virtio virtio_ring virtio_pci 9pnet_virtio 9p overlay kvm kvm_amd; do add_module "$m"; done
# The test cluster of the cross-host tests (below): veth, bridge; nf_tables, nft_numgen (packet
# loss); sch_tbf (a slow link). crc32c_generic first: nf_tables needs libcrc32c, whose start
# needs a "crc32c" (a soft dependency, which .modinfo's "depends=" does not name). Optional: a
# kernel without one leaves out what needs it, and those tests say why they fail.
for m in veth bridge crc32c_generic nf_tables nft_numgen sch_tbf; do add_module "$m" optional; done
for f in "${modules[@]}"; do
  cp "$f" "$IRD/lib/modules/"
  basename "$f" >>"$IRD/lib/modules/order"
done

# The cross-host tests (tests/integration/remote_*) make a cluster of network namespaces with
# scripts/cluster.sh: bash, iproute2's ip (busybox's has no `netns`) and tc (a slow link), and
# nft (packet loss), at their Debian paths, with their libraries. One that the host lacks is
# left out: the tests that need it then fail saying so, as they do on the host.
cluster_tools=()
for tool in /bin/bash /usr/sbin/ip /usr/sbin/tc /usr/sbin/nft; do
  [[ -x "$tool" ]] || continue
  mkdir -p "$IRD$(dirname "$tool")"
  rm -f "$IRD$tool"
  cp -L "$tool" "$IRD$tool"
  cluster_tools+=("$tool")
done
mkdir -p "$IRD/usr/bin" "$IRD/run" "$IRD/var"
ln -s /bin/busybox "$IRD/usr/bin/env"  # the tests run scripts/cluster.sh as /usr/bin/env ...
ln -s /run "$IRD/var/run"
dynamic=("${cluster_tools[@]}")
for n in "${names[@]}"; do dynamic+=("${bin[$n]}"); done
for f in "${dynamic[@]}"; do
  ldd "$f" 2>/dev/null | grep -o '/[^ ]*' || true
done | sort -u | while read -r lib; do
  mkdir -p "$IRD$(dirname "$lib")"
  cp -L "$lib" "$IRD$lib"
done

sq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }  # single-quoted for the guest's sh

{
  echo '#!/bin/sh'
  echo "KVM_AMD_OPTS=$(sq "$KVM_AMD_OPTS")"
  echo "TEST_TIMEOUT=$(sq "$TEST_TIMEOUT")"
  echo "SHARES=$(sq "${shares[*]}")"
  cat <<'EOF'
# Guest side of scripts/kvm_in_qemu.sh. /kiq is the host's per-boot dir (read-write): it holds
# job.sh (which binaries to run) and receives NAME.log, NAME.rc, heartbeat and setup-error.
export PATH=/usr/sbin:/usr/bin:/bin
# Tests that measure what a mechanism saves (not only what it does) check less here: one
# emulated CPU runs everything (remote_clone_test.cc, MulticastPushes...).
export FLURRY_TEST_EMULATED=1
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mount -t tmpfs tmp /tmp
mount -t tmpfs run /run  # network namespaces (ip netns), the test cluster's directory
# Loopback: tests talk TCP to 127.0.0.1 (the page server).
ip link set lo up 2>/dev/null || ifconfig lo 127.0.0.1 up 2>/dev/null || true
up() { cut -d' ' -f1 /proc/uptime; }
finish() { sync; umount /kiq 2>/dev/null; poweroff -f; }
echo "kvm-in-qemu-guest: up at $(up)s, kernel $(uname -r)"
while read -r m; do
  opts=""
  [ "$m" = kvm-amd.ko ] && opts="$KVM_AMD_OPTS"
  insmod "/lib/modules/$m" $opts || echo "kvm-in-qemu-guest: insmod $m failed"
done </lib/modules/order
if ! mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 kiq /kiq; then
  echo "kvm-in-qemu-guest: cannot mount the run dir"
  finish
fi
fail_setup() { echo "$*" >/kiq/setup-error; echo "kvm-in-qemu-guest: $*"; finish; }
[ -c /dev/kvm ] || fail_setup "no /dev/kvm after loading kvm_amd: $(dmesg | grep -iE 'kvm|svm' | tail -n 3 | tr '\n' ' ')"
echo "kvm-in-qemu-guest: /dev/kvm ready at $(up)s (kvm_amd npt=$(cat /sys/module/kvm_amd/parameters/npt) nested=$(cat /sys/module/kvm_amd/parameters/nested))"
i=0
for s in $SHARES; do
  mkdir -p "$s"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144,ro "share$i" "$s" \
    || fail_setup "cannot mount $s"
  i=$((i + 1))
done
(while :; do date +%s >/kiq/heartbeat; sleep 5; done) &

# run_binary NAME PATH FILTER: runs one gtest binary with FLURRY_BACKEND=kvm under the limit.
run_binary() {
  name=$1 path=$2 filter=$3
  echo "kvm-in-qemu-guest: [$(up)s] start $name${filter:+ --gtest_filter=$filter}"
  start=$(up)
  : >"/kiq/$name.log"
  (
    cd "$(dirname "$path")" || exit 126
    FLURRY_BACKEND=kvm timeout -s KILL "$TEST_TIMEOUT" "$path" ${filter:+"--gtest_filter=$filter"}
    echo $? >"/kiq/$name.rc.tmp"
  ) 2>&1 | tee -a "/kiq/$name.log"
  rc=$(cat "/kiq/$name.rc.tmp" 2>/dev/null || echo 125)
  wall=$(echo "$(up) $start" | awk '{ printf "%d", $1 - $2 + 0.5 }')
  echo "$rc $wall" >"/kiq/$name.rc"
  echo "kvm-in-qemu-guest: [$(up)s] end $name rc=$rc wall=${wall}s"
}
. /kiq/job.sh
echo "kvm-in-qemu-guest: done at $(up)s"
finish
EOF
} >"$IRD/init"
chmod +x "$IRD/init"
(cd "$IRD" && find . | cpio -o -H newc --quiet | gzip -1) >"$RUN/initrd.cpio.gz"
rm -rf "$IRD"

# --- Boots --------------------------------------------------------------------------------------
# Per binary, across attempts: test names that finished (passed/failed), the number of tests
# the first attempt announced, attempts made, and the final state.
declare -A passed=() failed=() skipped=() total=() attempts=() state=() rc=() wall=() hung_in=()
for n in "${names[@]}"; do
  passed[$n]=""; failed[$n]=""; skipped[$n]=""; total[$n]=""; attempts[$n]=0; state[$n]=pending; wall[$n]=0
done

# filter_for NAME: the user's filter minus the tests of NAME that already finished.
filter_for() {
  local -a finished
  read -ra finished <<<"${passed[$1]} ${failed[$1]}"
  local done_tests
  done_tests="$(IFS=:; echo "${finished[*]}")"
  if [[ -z "$done_tests" ]]; then
    printf '%s' "$USER_FILTER"
  elif [[ "$USER_FILTER" == *-* ]]; then
    printf '%s:%s' "$USER_FILTER" "$done_tests"
  else
    printf '%s-%s' "${USER_FILTER:-*}" "$done_tests"
  fi
}

# boot N NAME...: one QEMU run of the given binaries; returns when QEMU is gone.
boot() {
  local nr="$1"
  shift
  local dir="$RUN/boot$nr" n limit start now last
  mkdir -p "$dir"
  : >"$dir/job.sh"
  for n in "$@"; do
    echo "run_binary $(sq "$n") $(sq "${bin[$n]}") $(sq "$(filter_for "$n")")" >>"$dir/job.sh"
  done
  local virtfs=(-virtfs "local,path=$dir,mount_tag=kiq,security_model=none")
  local i=0 s
  for s in "${shares[@]}"; do
    virtfs+=(-virtfs "local,path=$s,mount_tag=share$i,security_model=none,readonly=on")
    i=$((i + 1))
  done
  limit="${BOOT_TIMEOUT:-$((300 + TEST_TIMEOUT * $#))}"
  log "boot $nr: $* (cpu=$CPU smp=$SMP mem=$MEM, limit ${limit}s, stall ${STALL}s)"
  : >"$dir/console.log"
  qemu-system-x86_64 -accel tcg,thread=multi -cpu "$CPU" -smp "$SMP" -m "$MEM" \
    -nographic -nic none -no-reboot -monitor "unix:$dir/monitor.sock,server,nowait" \
    -kernel "$VMLINUZ" -initrd "$RUN/initrd.cpio.gz" \
    -append "console=ttyS0 panic=-1 quiet loglevel=4" \
    "${virtfs[@]}" </dev/null >"$dir/console.log" 2>&1 &
  qemu_pid=$!
  tail -n +1 -f --pid="$qemu_pid" "$dir/console.log" &
  tail_pid=$!
  start=$(date +%s)
  while kill -0 "$qemu_pid" 2>/dev/null; do
    sleep 2
    now=$(date +%s)
    last=$start
    if [[ -f "$dir/heartbeat" ]]; then last=$(stat -c %Y "$dir/heartbeat"); fi
    if (( now - start > limit )); then
      log "boot $nr: over its ${limit}s limit, killing QEMU"
      kill -KILL "$qemu_pid" 2>/dev/null || true
      break
    elif (( now - last > STALL )); then
      log "boot $nr: no guest heartbeat for $((now - last))s (guest kernel hung), killing QEMU"
      kill -KILL "$qemu_pid" 2>/dev/null || true
      break
    fi
  done
  wait "$qemu_pid" 2>/dev/null || true
  qemu_pid=""
  wait "$tail_pid" 2>/dev/null || true
  tail_pid=""
  log "boot $nr: QEMU ran $(( $(date +%s) - start ))s"
}

# collect N NAME...: reads the results of boot N.
collect() {
  local nr="$1"
  shift
  local dir="$RUN/boot$nr" n out r w
  for n in "$@"; do
    out="$dir/$n.log"
    [[ -f "$out" ]] || continue  # never started: the boot died before
    attempts[$n]=$((attempts[$n] + 1))
    [[ -n "${total[$n]}" ]] \
      || total[$n]="$(sed -nE 's/^\[==========\] Running ([0-9]+) tests?.*/\1/p' "$out" | head -n 1)"
    passed[$n]+=" $(sed -nE 's/^\[       OK \] ([^ ,]+).* \([0-9]+ ms\)$/\1/p' "$out" | tr '\n' ' ')"
    failed[$n]+=" $(sed -nE 's/^\[  FAILED  \] ([^ ,]+).* \([0-9]+ ms\)$/\1/p' "$out" | tr '\n' ' ')"
    skipped[$n]+=" $(sed -nE 's/^\[  SKIPPED \] ([^ ,]+).* \([0-9]+ ms\)$/\1/p' "$out" | tr '\n' ' ')"
    if [[ -f "$dir/$n.rc" ]]; then
      read -r r w <"$dir/$n.rc"
      wall[$n]=$((wall[$n] + w))
      if [[ "$r" -eq 137 ]]; then
        state[$n]=hung
        log "$n: killed after ${TEST_TIMEOUT}s (attempt ${attempts[$n]})"
      else
        state[$n]=finished
        rc[$n]=$r
      fi
    else
      state[$n]=hung
      log "$n: the guest hung (attempt ${attempts[$n]})"
    fi
    if [[ "${state[$n]}" == hung ]]; then
      hung_in[$n]="$(sed -nE 's/^\[ RUN      \] (.*)$/\1/p' "$out" | tail -n 1)"
      [[ -z "${hung_in[$n]}" ]] || log "$n: the last test started was ${hung_in[$n]}"
    fi
  done
}

nr=0
while :; do
  todo=()
  for n in "${names[@]}"; do
    case "${state[$n]}" in
      pending) todo+=("$n") ;;
      hung) if (( attempts[$n] <= RETRIES )); then todo+=("$n"); fi ;;
    esac
  done
  [[ ${#todo[@]} -gt 0 ]] || break
  nr=$((nr + 1))
  boot "$nr" "${todo[@]}"
  if [[ -f "$RUN/boot$nr/setup-error" ]]; then
    die "guest setup failed: $(cat "$RUN/boot$nr/setup-error")"
  fi
  started=0
  for n in "${todo[@]}"; do
    if [[ -f "$RUN/boot$nr/$n.log" ]]; then started=1; fi
  done
  if [[ $started -eq 0 ]]; then
    die "boot $nr started no test (see the console output above)"
  fi
  collect "$nr" "${todo[@]}"
done

# --- Report -------------------------------------------------------------------------------------
count() { local -a w; read -ra w <<<"$1"; echo "${#w[@]}"; }  # count "WORDS"
sum_passed=0
sum_failed=0
sum_skipped=0
status=0
echo
for n in "${names[@]}"; do
  p=$(count "${passed[$n]}")
  f=$(count "${failed[$n]}")
  s=$(count "${skipped[$n]}")
  # Tests that never finished (the binary hung twice, crashed, or was killed) did not pass.
  unfinished=0
  if [[ "${state[$n]}" != finished || "${rc[$n]:-0}" -ne 0 ]]; then
    t="${total[$n]:-0}"
    unfinished=$(( t - p - f - s ))
    (( unfinished > 0 )) || unfinished=0
    if [[ "${state[$n]}" != finished ]] && (( unfinished == 0 )); then unfinished=1; fi
  fi
  f=$((f + unfinished))
  if [[ "${state[$n]}" != finished ]]; then
    r=124
  else
    r="${rc[$n]}"
    if [[ "$r" -eq 0 && $f -ne 0 ]]; then r=1; fi
  fi
  if [[ "$r" -ne 0 && $f -eq 0 ]]; then f=1; fi  # a non-zero exit is never a silent pass
  for t in ${failed[$n]}; do log "$n: FAILED $t"; done
  for t in ${skipped[$n]}; do log "$n: skipped $t (see its output above for why)"; done
  if (( unfinished > 0 )); then
    log "$n: $unfinished test(s) did not finish${hung_in[$n]:+ (hung in ${hung_in[$n]})}"
  fi
  log "$n passed=$p failed=$f skipped=$s rc=$r attempts=${attempts[$n]} wall=${wall[$n]}s"
  sum_passed=$((sum_passed + p))
  sum_skipped=$((sum_skipped + s))
  sum_failed=$((sum_failed + f))
  [[ "$r" -eq 0 ]] || status=1
done
[[ $sum_failed -eq 0 ]] || status=1
log "total passed=$sum_passed failed=$sum_failed rc=$status skipped=$sum_skipped"
exit "$status"
