#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds meshwarp-cni-node, the full CNI plugin as a Node.js single executable application
# (SEA): src/cni/main.ts bundled by esbuild into one script, put into a copy of the
# project's Node.js binary with postject. The static forwarder (meshwarp-cni) execs it when
# the agent cannot run a request (docs/cni.md).
#   scripts/build-cni.sh OUT [--snapshot]
# --snapshot makes the blob a V8 startup snapshot of the evaluated bundle (the issue's
# candidate; measured slower to start here, see docs/benchmark.md, so the default is without).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$1; shift
snapshot=false
[ "${1:-}" = --snapshot ] && snapshot=true
node=.tools/node/bin/node
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
cp "$node" "$tmp/bin"
chmod u+w "$tmp/bin"
node_modules/.bin/postject "$tmp/bin" NODE_SEA_BLOB "$tmp/sea.blob" \
  --sentinel-fuse NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2 >/dev/null 2>&1
chmod 0755 "$tmp/bin"
mkdir -p "$(dirname "$out")"
mv "$tmp/bin" "$out"
