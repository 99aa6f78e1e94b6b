#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# km-mkinitrd.sh KDIR KVER OUT: the guest's initramfs — static busybox, the
# modules that reach the host's root (virtio_pci, virtiofs, overlay; with
# their dependencies, decompressed: busybox insmod cannot read .ko.xz) and a
# stage-1 /init that mounts the read-only virtiofs root under a tmpfs overlay
# (the guest writes anywhere, nothing reaches the host) and switch_roots into
# km-stage2.sh.
set -euo pipefail
KDIR=$1 KVER=$2 OUT=$3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
mkdir -p "$T"/{bin,proc,sys,dev,lower,upper,newroot,mods}
cp "$(command -v busybox)" "$T/bin/busybox"
: > "$T/mods/order"
for m in virtio_pci virtiofs overlay; do
  # --show-depends prints "insmod PATH" per module to load, dependencies first ("builtin" for =y).
  modprobe -d "$KDIR" -S "$KVER" --show-depends "$m" | while read -r verb path _; do
    [ "$verb" = insmod ] || continue
    name=$(basename "$path"); name=${name%.xz}; name=${name%.zst}
    grep -qx "$name" "$T/mods/order" && continue
    case $path in
      *.xz) xz -dc "$path" > "$T/mods/$name" ;;
      *.zst) zstd -qdc "$path" > "$T/mods/$name" ;;
      *) cp "$path" "$T/mods/$name" ;;
    esac
    echo "$name" >> "$T/mods/order"
  done
done
cat > "$T/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /mods/order); do insmod /mods/$m 2>/dev/null; done
arg() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
STAGE2=$(arg km.stage2)
mount -t virtiofs hostroot /lower -o ro || { echo "km: no virtiofs root"; echo o > /proc/sysrq-trigger; }
mount -t tmpfs -o size=1536m,mode=755 upper /upper
mkdir -p /upper/u /upper/w
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w /newroot \
  || { echo "km: overlay failed"; echo o > /proc/sysrq-trigger; }
mkdir -p /newroot/mnt/out
mount -t virtiofs out /newroot/mnt/out
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/bash "$STAGE2"
EOF
chmod +x "$T/init"
(cd "$T" && find . | cpio -o -H newc --quiet | gzip -1 > "$OUT")
