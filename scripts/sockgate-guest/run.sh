#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# The S4 behaviour gate (mw-sockcheck) on another kernel, in a qemu guest:
#   scripts/sockgate-guest/run.sh VMLINUZ [VMLINUZ...]
# Builds a static loader (libbpf: loads only mwsc_sk_msg of build/bpf/sidecar.bpf.o,
# nothing pinned, attaches it to its sock_pairs, switches S4 on, runs
# mw-sockcheck with the maps as fds 3 and 4) and a static mw-sockcheck, packs
# them with busybox into an initramfs, boots each kernel under TCG with no
# network device (-nic none: everything stays on the guest's loopback) and
# prints the checks that failed, per family. Needs: make bpf, cc, libbpf-dev
# (libbpf.a, libelf.a, libz.a), busybox (static), cpio, qemu-system-x86_64.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/mw-sockgate-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT INT TERM
mkdir -p "$work/root/bin" "$work/root/proc" "$work/root/sys" "$work/root/dev"
cc -O2 -static -o "$work/root/loader" "$here/loader.c" -lbpf -lelf -lz
cc -O2 -static -pthread -o "$work/root/mw-sockcheck" "$root/src/datapath/sidecar/sockcheck.c"
cp "$root/build/bpf/sidecar.bpf.o" "$work/root/"
cp "$(command -v busybox)" "$work/root/bin/busybox"
cat > "$work/root/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
echo "MWGATE kernel $(/bin/busybox uname -r)"
for fam in 4 6; do
  if [ $fam = 6 ]; then a=-6; else a=; fi
  /loader /sidecar.bpf.o /mw-sockcheck $a -c 1000 -m 16 2>&1 | while read -r l; do echo "MWGATE v$fam $l"; done
done
/bin/busybox poweroff -f
INIT
chmod +x "$work/root/init"
(cd "$work/root" && find . | cpio -o -H newc 2>/dev/null | gzip -1 > "$work/initrd.gz")
for k in "$@"; do
  out=$(timeout 600 qemu-system-x86_64 -accel tcg,thread=single -m 1024 -smp 1 -nographic -no-reboot -nic none \
    -kernel "$k" -initrd "$work/initrd.gz" -append "console=ttyS0 panic=-1 quiet rdinit=/init" 2>&1 | tr -d '\r' | sed -n 's/^.*MWGATE //p')
  kernel=$(printf '%s\n' "$out" | sed -n 's/^kernel //p')
  checks=$(printf '%s\n' "$out" | grep -c '"check":"[a-z]' || true)
  ok=$(printf '%s\n' "$out" | grep -v '"check":"redirected"' | grep -c '"ok":true' || true)
  total=$(printf '%s\n' "$out" | grep -v '"check":"redirected"' | grep -c '"check":' || true)
  echo "== ${kernel:-$k}: $ok of $total checks pass"
  printf '%s\n' "$out" | grep '"ok":false' | sed 's/^/   /' || true
  printf '%s\n' "$out" | grep -q '"check":"load"' && printf '%s\n' "$out" | grep -E 'unknown func|invalid|failed to load' | head -3 | sed 's/^/   /' || true
done
