#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Stage 2 inside a matrix guest (PID 1, on the overlay over the host's root):
# fresh /run, /dev/pts, /dev/shm; the guest kernel's modules where modprobe
# looks; bpffs, debugfs, tracefs; the cgroup layout of km.cg (unified |
# hybrid | v1 | none); lo up; then /mnt/out/job.sh, dmesg saved, power off.
# Never edit this file while a guest runs it (bash reads scripts as it goes).
arg() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" /proc/cmdline; }
KVER=$(uname -r)
KDIR=$(arg km.kdir)
CG=$(arg km.cg)
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb
mount -t tmpfs -o mode=755 run /run
mkdir -p /run/netns /run/lock /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 shm /dev/shm
mkdir -p "/usr/lib/modules/$KVER" && mount --bind "$KDIR/usr/lib/modules/$KVER" "/usr/lib/modules/$KVER"
mount -t bpf bpf /sys/fs/bpf
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
case $CG in
  unified) mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup ;;
  hybrid|v1)
    mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup
    for c in cpu,cpuacct memory pids net_cls,net_prio devices freezer blkio; do
      mkdir -p "/sys/fs/cgroup/$c" && mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c"
    done
    if [ "$CG" = hybrid ]; then mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup/unified; fi
    ;;
  none) ;;
esac
hostname km-guest
ip link set lo up
echo "stage2 ready $(cut -d' ' -f1 /proc/uptime)s kernel $KVER cgroup $CG" > /mnt/out/stage2.log
if [ -x /mnt/out/job.sh ] || [ -f /mnt/out/job.sh ]; then
  bash /mnt/out/job.sh > /mnt/out/job.out 2>&1
  echo "job rc $? at $(cut -d' ' -f1 /proc/uptime)s" >> /mnt/out/stage2.log
  dmesg > /mnt/out/dmesg.txt
  sync
  echo o > /proc/sysrq-trigger
else
  echo "no job: root shell on the console (exit powers off)"
  setsid -c bash -i </dev/ttyS0 >/dev/ttyS0 2>&1
  echo o > /proc/sysrq-trigger
fi
sleep 60
