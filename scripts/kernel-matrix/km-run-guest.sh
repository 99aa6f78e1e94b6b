#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# km-run-guest.sh KDIR OUTDIR LAYOUT: boots one matrix guest — kernel KDIR,
# cgroup LAYOUT — runs OUTDIR/job.sh in it and returns when it powers off.
# The host's root is served read-only (KM_HOSTROOT, a read-only bind of /;
# made here when unset) by one virtiofsd, OUTDIR read-write by another.
# The guest has no network device (-nic none). Everything started here is
# stopped here by its pid, also on failure or interruption.
set -euo pipefail
KDIR=$1 OUT=$2 LAYOUT=${3:-unified}
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=${REPO:-$(cd "$HERE/../.." && pwd)}
KVER=$(basename "$KDIR")
TIMEOUT=${TIMEOUT:-3600}
MEM=${MEM:-2G}
SMP=${SMP:-2}
CPU=${CPU:-Nehalem-v2}
ACCEL=${ACCEL:-tcg,thread=single}
QEMU=${QEMU:-qemu-system-x86_64}
VIRTIOFSD=${VIRTIOFSD:-/usr/lib/qemu/virtiofsd}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
RUN=$(mktemp -d /tmp/km-run.XXXXXX)
PIDS=()
OWN_ROOT=""
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ -n "$OWN_ROOT" ]; then umount "$OWN_ROOT" 2>/dev/null || umount -l "$OWN_ROOT"; rmdir "$OWN_ROOT"; fi
  rm -rf "$RUN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
if [ -z "${KM_HOSTROOT:-}" ]; then
  OWN_ROOT=$(mktemp -d /tmp/km-hostroot.XXXXXX)
  mount --bind / "$OWN_ROOT" && mount -o remount,bind,ro "$OWN_ROOT"
  KM_HOSTROOT=$OWN_ROOT
fi
"$VIRTIOFSD" --socket-path="$RUN/root.sock" -o source="$KM_HOSTROOT" -o cache=always -o no_posix_lock \
  > "$OUT/virtiofsd-root.log" 2>&1 &
PIDS+=($!)
"$VIRTIOFSD" --socket-path="$RUN/out.sock" -o source="$OUT" -o cache=none \
  > "$OUT/virtiofsd-out.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do [ -S "$RUN/root.sock" ] && [ -S "$RUN/out.sock" ] && break; sleep 0.1; done
[ -S "$RUN/root.sock" ] && [ -S "$RUN/out.sock" ] || { echo "km-run-guest: virtiofsd did not start" >&2; exit 1; }
t0=$(date +%s)
# Network safety: -nic none, no other netdev; only lo and the test's own veths exist in the guest.
timeout -k 10 "$TIMEOUT" "$QEMU" -accel "$ACCEL" -cpu "$CPU" -m "$MEM" -smp "$SMP" -machine q35 \
  -nic none -vga none -display none -monitor none -serial "file:$OUT/console.log" -no-reboot \
  -object memory-backend-memfd,id=mem,size="$MEM",share=on -numa node,memdev=mem \
  -chardev socket,id=vfsroot,path="$RUN/root.sock" -device vhost-user-fs-pci,chardev=vfsroot,tag=hostroot,queue-size=1024 \
  -chardev socket,id=vfsout,path="$RUN/out.sock" -device vhost-user-fs-pci,chardev=vfsout,tag=out \
  -kernel "$KDIR/vmlinuz" -initrd "$KDIR/km-initrd.cpio.gz" \
  -append "console=ttyS0 quiet loglevel=4 panic=-1 km.stage2=$HERE/km-stage2.sh km.cg=$LAYOUT km.kdir=$KDIR" \
  < /dev/null &
PIDS+=($!)
rc=0; wait "${PIDS[2]}" || rc=$?
echo "guest $KVER $LAYOUT: qemu rc $rc, $(( $(date +%s) - t0 )) s" | tee -a "$OUT/guest.log" >&2
[ "$rc" = 0 ] && grep -q '^job rc' "$OUT/stage2.log" 2>/dev/null
