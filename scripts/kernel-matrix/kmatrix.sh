#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The kernel matrix (docs/kernels.md): Debian's own cloud kernels booted under
# QEMU (TCG, no network device), the host's root shared read-only over
# virtiofs, the kernel tests (and a named conformance subset) run inside, TAP
# per kernel × cgroup layout, one summary table.
#
#   kmatrix.sh prepare    resolve + download + unpack the kernels, build the initramfs (cached)
#   kmatrix.sh run        run the job on every kernel × layout, write the summary
#   kmatrix.sh all        prepare + run
#   kmatrix.sh summary    print the summary of the last run again
#   kmatrix.sh clean      drop the unpacked kernels' work files (keeps the .debs)
#
# Knobs (environment):
#   KM_CACHE    /var/cache/meshwarp/kernels   .debs, unpacked kernels, private apt state (kept; CI reuses it)
#   KM_OUT      build/kernel-matrix           per-run TAP, console, dmesg; summary.md
#   KM_SUITES   "bullseye-security bookworm-security trixie-security trixie-backports"
#   KM_KERNELS  glob on the kernel release, e.g. "6.1*" (default: all prepared)
#   KM_CGROUPS  "unified hybrid"              cgroup layouts (hybrid = cgroup2 at /sys/fs/cgroup/unified)
#   KM_TESTS    test files for the unified layout (default: test/kernel/*.test.ts)
#   KM_HYBRID_TESTS  test files for the hybrid layout (default: the cgroup-attaching subset)
#   KM_CONFORMANCE   conformance files run per kernel, unified only (default: capture + lifecycle, ebpf)
#               (an empty value, unlike an unset one, runs none: KM_CONFORMANCE= )
#   KM_PROFILE  full (default) | ci          ci = the named subset .ci/run uses (docs/kernels.md)
#   TIMEOUT     seconds per guest (default 3600)
#   CI=true     a missing qemu/virtiofsd/kernel, or any failure, fails the run (outside CI a
#               machine that cannot run guests skips the matrix with the reason)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
HERE=$REPO/scripts/kernel-matrix
KM_CACHE=${KM_CACHE:-/var/cache/meshwarp/kernels}
KM_OUT=${KM_OUT:-$REPO/build/kernel-matrix}
KM_SUITES=${KM_SUITES:-bullseye-security bookworm-security trixie-security trixie-backports}
KM_CGROUPS=${KM_CGROUPS:-unified hybrid}
KM_PROFILE=${KM_PROFILE:-full}
export KM_CACHE KM_OUT REPO

log() { printf 'kmatrix: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# --- what runs where -------------------------------------------------------
# Everything by default (make kernel-matrix); the CI profile is the named
# subset that keeps .ci/run under its budget (docs/kernels.md says why these).
if [ "$KM_PROFILE" = ci ]; then
  : "${KM_TESTS=test/kernel/binding.test.ts test/kernel/tc-attach.test.ts test/kernel/tc-programs.test.ts test/kernel/ambient-tc-programs.test.ts test/kernel/cni-lab.test.ts test/kernel/cni-matrix.test.ts}"
  : "${KM_HYBRID_TESTS=test/kernel/binding.test.ts}"
  : "${KM_CONFORMANCE=}"
else
  # Every kernel test but bench.test.ts: it runs the A/B benchmark, whose numbers mean nothing
  # under emulation (and benchmarks are never run on the shared CI machine twice).
  : "${KM_TESTS=$(ls test/kernel/*.test.ts | grep -v '/bench\.test\.ts$' | tr '\n' ' ')}"
  : "${KM_HYBRID_TESTS=test/kernel/binding.test.ts test/kernel/agent.test.ts test/kernel/cni-lab.test.ts test/kernel/doctor.test.ts}"
  : "${KM_CONFORMANCE=capture lifecycle}"
fi

# --- tools -----------------------------------------------------------------
need_tools() {
  local missing=()
  for t in qemu-system-x86_64 busybox cpio depmod modprobe dpkg-deb apt-get xz zstd; do
    command -v "$t" >/dev/null || missing+=("$t")
  done
  [ -x /usr/lib/qemu/virtiofsd ] || missing+=(/usr/lib/qemu/virtiofsd)
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && [ "${KM_NO_INSTALL:-}" != 1 ]; then
      log "installing qemu-system-x86 busybox-static cpio kmod xz-utils zstd (missing: ${missing[*]})"
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        qemu-system-x86 busybox-static cpio kmod xz-utils zstd >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
          --no-install-recommends qemu-system-x86 busybox-static cpio kmod xz-utils zstd >/dev/null; } || true
    fi
  fi
  missing=()
  for t in qemu-system-x86_64 busybox cpio depmod modprobe dpkg-deb; do command -v "$t" >/dev/null || missing+=("$t"); done
  [ -x /usr/lib/qemu/virtiofsd ] || missing+=(/usr/lib/qemu/virtiofsd)
  [ "$(id -u)" = 0 ] || missing+=("root (a read-only bind of / for the guests)")
  [ ${#missing[@]} -eq 0 ] && return 0
  # CI=true: a matrix that cannot run is a failure, never a skip.
  [ "${CI:-}" = true ] && die "CI=true: cannot run the kernel matrix, missing: ${missing[*]}"
  log "SKIPPED: cannot run the kernel matrix here, missing: ${missing[*]} (apt-get install qemu-system-x86 busybox-static cpio kmod xz-utils zstd)"
  exit 0
}

# --- private apt: never touches /etc/apt ------------------------------------
APT_DIR=$KM_CACHE/apt
apt_setup() {
  mkdir -p "$APT_DIR"/lists/partial "$APT_DIR"/archives/partial "$APT_DIR"/etc/parts "$APT_DIR"/etc/prefs
  touch "$APT_DIR"/status
  : > "$APT_DIR"/etc/sources.list
  for s in $KM_SUITES; do
    case $s in
      *-security) echo "deb http://deb.debian.org/debian-security $s main" ;;
      *) echo "deb http://deb.debian.org/debian $s main" ;;
    esac >> "$APT_DIR"/etc/sources.list
  done
  cat > "$APT_DIR"/apt.conf <<EOF
Dir::State "$APT_DIR";
Dir::State::Lists "$APT_DIR/lists";
Dir::State::status "$APT_DIR/status";
Dir::Cache "$APT_DIR";
Dir::Cache::archives "$APT_DIR/archives";
Dir::Etc::SourceList "$APT_DIR/etc/sources.list";
Dir::Etc::SourceParts "$APT_DIR/etc/parts";
Dir::Etc::Parts "$APT_DIR/etc/parts";
Dir::Etc::Preferences "$APT_DIR/etc/prefs/none";
Dir::Etc::PreferencesParts "$APT_DIR/etc/prefs";
APT::Architecture "amd64";
APT::Architectures { "amd64"; };
Acquire::Languages "none";
APT::Sandbox::User "root";
EOF
}
kapt() { APT_CONFIG=$APT_DIR/apt.conf "$@"; }

# The image package a suite's linux-image-cloud-amd64 depends on now (ABI bumps need no edit).
resolve_image() {
  kapt apt-cache -o APT::Default-Release="$1" depends linux-image-cloud-amd64 2>/dev/null \
    | sed -n 's/^ *Depends: \(linux-image-[0-9][^ ]*\)$/\1/p' | head -1
}

prepare() {
  need_tools
  apt_setup
  local stamp=$APT_DIR/lists/.updated
  if [ ! -f "$stamp" ] || [ -n "$(find "$stamp" -mmin +720)" ] || [ "$(cat "$stamp")" != "$KM_SUITES" ]; then
    log "apt-get update (private lists under $APT_DIR)"
    kapt apt-get update -q >/dev/null 2>"$KM_CACHE/apt-update.err" \
      || { [ -f "$stamp" ] && log "apt-get update failed, using the cached lists" ; } \
      || { cat "$KM_CACHE/apt-update.err" >&2; die "apt-get update failed"; }
    grep -E '^(W|E):' "$KM_CACHE/apt-update.err" >&2 || true
    echo "$KM_SUITES" > "$stamp"
  fi
  mkdir -p "$KM_CACHE"/debs "$KM_CACHE"/k
  for s in $KM_SUITES; do
    local img kver kdir pkgs
    img=$(resolve_image "$s")
    [ -n "$img" ] || die "$s: no linux-image-cloud-amd64 in the archive's lists"
    kver=${img#linux-image-}
    kdir=$KM_CACHE/k/$kver
    echo "$s" > "$KM_CACHE/k/.suite-$kver" 
    if [ -f "$kdir/.ready" ]; then log "$s: $kver (cached)"; continue; fi
    # 6.13+ splits the image into linux-binary-*, linux-modules-*, linux-base-*.
    pkgs="$img $(kapt apt-cache depends "$img" 2>/dev/null | awk -v k="$kver" \
      '$1 == "Depends:" && ($2 == "linux-binary-" k || $2 == "linux-modules-" k || $2 == "linux-base-" k) { printf "%s ", $2 }')"
    log "$s: $kver: downloading $pkgs"
    (cd "$KM_CACHE/debs" && kapt apt-get download -q -o APT::Default-Release="$s" $pkgs >/dev/null)
    rm -rf "$kdir.tmp" && mkdir -p "$kdir.tmp"
    for p in $pkgs; do dpkg-deb -x "$(ls "$KM_CACHE"/debs/"${p}"_*.deb | tail -1)" "$kdir.tmp"; done
    # Debian ≥ 12 ships /usr/lib/modules; older ones /lib/modules. One layout: usr/lib.
    if [ -d "$kdir.tmp/lib/modules" ] && [ ! -L "$kdir.tmp/lib" ]; then
      mkdir -p "$kdir.tmp/usr/lib" && mv "$kdir.tmp/lib/modules" "$kdir.tmp/usr/lib/" && rm -rf "$kdir.tmp/lib"
    fi
    [ -e "$kdir.tmp/lib" ] || ln -s usr/lib "$kdir.tmp/lib"
    local vmlinuz
    vmlinuz=$(ls "$kdir.tmp"/boot/vmlinuz-"$kver" "$kdir.tmp"/usr/lib/modules/"$kver"/vmlinuz 2>/dev/null | head -1 || true)
    [ -n "$vmlinuz" ] || die "$kver: no vmlinuz in $pkgs"
    ln -sf "${vmlinuz#$kdir.tmp/}" "$kdir.tmp/vmlinuz"
    depmod -b "$kdir.tmp" "$kver"
    "$HERE"/km-mkinitrd.sh "$kdir.tmp" "$kver" "$kdir.tmp/km-initrd.cpio.gz"
    rm -rf "$kdir" && mv "$kdir.tmp" "$kdir"
    touch "$kdir/.ready"
    log "$s: $kver ready ($(du -sh "$kdir" | cut -f1))"
  done
}

kernels() {
  local k
  for s in $KM_SUITES; do
    k=$(resolve_image "$s"); k=${k#linux-image-}
    [ -n "$k" ] && [ -f "$KM_CACHE/k/$k/.ready" ] || { log "$s: kernel not prepared"; [ "${CI:-}" = true ] && die "CI=true: $s has no prepared kernel"; continue; }
    # shellcheck disable=SC2053
    if [[ $k == ${KM_KERNELS:-*} ]]; then echo "$k"; fi
  done
}

# The job a guest runs (from $REPO, as root): doctor, then each test file to TAP.
write_job() { # layout files... > job.sh
  local layout=$1; shift
  cat <<EOF
#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# Generated by scripts/kernel-matrix/kmatrix.sh: one guest's job (layout $layout).
set -u
cd "${KM_SNAP:-$REPO}"
export CI=\${KM_GUEST_CI:-${KM_GUEST_CI:-true}} MESHWARP_KERNEL_MATRIX=1 MESHWARP_TIME_SCALE=${KM_TIME_SCALE:-10}
NODE=".tools/node/bin/node --disable-warning=ExperimentalWarning"
mkdir -p /mnt/out/tap
$( [ "$layout" = unified ] || [ "$KM_PROFILE" != ci ] && echo 'bin/meshwarp doctor --json > /mnt/out/doctor.json 2>/mnt/out/doctor.err; echo "doctor rc $?" >> /mnt/out/job.log' )
run() { # name env... -- file
  local name=\$1; shift
  local envs=(); while [ "\$1" != -- ]; do envs+=("\$1"); shift; done; shift
  local t0=\$(date +%s) rc try
  for try in 1 2; do
    env "\${envs[@]}" timeout -k 10 1500 \$NODE --test --test-reporter=tap --test-concurrency=1 "\$@" > /mnt/out/tap/\$name.tap 2> /mnt/out/tap/\$name.err
    rc=\$?
    # Retry once only when node itself died of a signal (TCG crashes; docs/kernels.md), never on a plain failure.
    if [ \$rc -gt 128 ] || ! grep -q '^# tests ' /mnt/out/tap/\$name.tap; then
      echo "\$name: node rc \$rc (try \$try)" >> /mnt/out/job.log; cp /mnt/out/tap/\$name.tap /mnt/out/tap/\$name.try\$try 2>/dev/null
      [ \$try = 1 ] && continue
    fi
    break
  done
  echo "\$name rc \$rc \$(( \$(date +%s) - t0 ))s" >> /mnt/out/job.log
}
EOF
  local f
  for f in "$@"; do
    case $f in
      conformance:*) # conformance:<file> runs the eBPF sidecar engine; legacy tc variant too
        local c=${f#conformance:}
        echo "run conformance-$c-ebpf MESHWARP_ENGINE=ebpf -- test/conformance/$c.test.ts"
        [ "$c" = capture ] || [ "$c" = lifecycle ] && echo "run conformance-$c-ebpf-legacy MESHWARP_ENGINE=ebpf MESHWARP_TC=legacy -- test/conformance/$c.test.ts"
        ;;
      *) echo "run $(basename "$f" .test.ts) X=1 -- $f" ;;
    esac
  done
  echo 'echo done >> /mnt/out/job.log'
}

HOSTROOT=""
KM_SNAP=""
cleanup_hostroot() {
  if [ -n "$HOSTROOT" ] && mountpoint -q "$HOSTROOT"; then umount "$HOSTROOT" || umount -l "$HOSTROOT"; fi
  [ -n "$HOSTROOT" ] && rmdir "$HOSTROOT" 2>/dev/null || true
  [ -n "$KM_SNAP" ] && rm -rf "$KM_SNAP" || true
  HOSTROOT="" KM_SNAP=""
}

run_matrix() {
  need_tools
  [ -x .tools/node/bin/node ] || die "no .tools/node (run make setup first)"
  [ -f build/bpf/sidecar.bpf.o ] || die "no eBPF objects (run make bpf first)"
  local ks; ks=$(kernels)
  [ -n "$ks" ] || die "no prepared kernels (kmatrix.sh prepare)"
  # One read-only, non-recursive bind of / for every guest of this run: no /proc, /sys, /dev submounts.
  trap cleanup_hostroot EXIT
  trap 'exit 130' INT TERM
  # The guests run a snapshot of the checkout (sources, build/, node_modules): edits made
  # while a run goes on do not mix into it. KM_SNAPSHOT=0 runs the checkout itself.
  if [ "${KM_SNAPSHOT:-1}" = 1 ]; then
    KM_SNAP=$(mktemp -d /tmp/km-repo.XXXXXX)
    tar -C "$REPO" --exclude=./build/kernel-matrix -cf - . | tar -C "$KM_SNAP" -xf -
    log "snapshot of the checkout: $KM_SNAP ($(git -C "$REPO" rev-parse --short HEAD)$(git -C "$REPO" diff --quiet HEAD || echo ', with uncommitted changes'))"
  fi
  HOSTROOT=$(mktemp -d /tmp/km-hostroot.XXXXXX)
  mount --bind / "$HOSTROOT" && mount -o remount,bind,ro "$HOSTROOT"
  export KM_HOSTROOT=$HOSTROOT
  mkdir -p "$KM_OUT"
  local k layout out files
  for k in $ks; do
    for layout in $KM_CGROUPS; do
      out=$KM_OUT/$k/$layout
      rm -rf "$out" && mkdir -p "$out"
      if [ "$layout" = unified ]; then
        files=$KM_TESTS
        for c in $KM_CONFORMANCE; do files="$files conformance:$c"; done
      else
        files=$KM_HYBRID_TESTS
      fi
      [ -n "$files" ] || continue
      write_job "$layout" $files > "$out/job.sh"
      log "$k $layout: $(echo $files | wc -w) files"
      local rc=0
      "$HERE"/km-run-guest.sh "$KM_CACHE/k/$k" "$out" "$layout" || rc=$?
      [ "$rc" = 130 ] && die "interrupted"
      [ "$rc" = 0 ] || log "$k $layout: guest failed (rc $rc, see $out/console.log)"
    done
  done
  cleanup_hostroot; trap - EXIT INT TERM
  summary
}

summary() {
  .tools/node/bin/node --disable-warning=ExperimentalWarning "$HERE"/km-summarize.ts "$KM_OUT" "$KM_CACHE/k" | tee "$KM_OUT/summary.md"
  if [ "${CI:-}" = true ]; then grep -q '^RESULT: ok' "$KM_OUT/summary.md" || die "CI=true: the kernel matrix has failures (table above)"; fi
}

case ${1:-all} in
  prepare) prepare ;;
  run) run_matrix ;;
  all) prepare; run_matrix ;;
  summary) summary ;;
  clean) rm -rf "$KM_CACHE/k" "$KM_OUT" ;;
  *) die "usage: $0 prepare|run|all|summary|clean" ;;
esac
