#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the agent's OCI image without a container engine (docs/image.md):
#   scripts/build-image.sh [--debug] [--out DIR]
# Layer 1: Debian packages (fetched once with `apt-get download` into
# /var/cache/meshwarp/image/debs, unpacked with dpkg-deb: no maintainer scripts, no
# shell, no compiler). Layer 2: the project (Node.js 24 from .tools, src/, koffi, the
# prebuilt eBPF objects, the CNI binaries, a static `meshwarp` launcher). Both layers are
# tar files with sorted entries, owner 0:0 and every mtime at SOURCE_DATE_EPOCH (the last
# commit's time), gzip without a name or time; umoci writes the OCI layout with the same
# created time, so the same inputs give the same digest. --debug adds bash, bpftool and
# iproute2's ss (tag suffix -debug). Output: an OCI layout (default build/image/oci) with
# the reference the chart uses by default (ghcr.io/meshwarp/meshwarp:<appVersion>).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

debug=false
out=build/image/oci
while [ $# -gt 0 ]; do
  case $1 in
    --debug) debug=true ;;
    --out) out=$2; shift ;;
    *) echo "usage: $0 [--debug] [--out DIR]" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '[image] %s\n' "$*" >&2; }
for t in umoci dpkg-deb apt-get tar gzip sha256sum; do
  command -v "$t" >/dev/null || { say "missing $t (make setup-image installs umoci, skopeo, podman)"; exit 1; }
done

version=$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' deploy/helm/meshwarp/Chart.yaml)
repo=ghcr.io/meshwarp/meshwarp
tag=$version$($debug && echo -debug || true)
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
cache=${MESHWARP_IMAGE_CACHE:-/var/cache/meshwarp/image}
arch=amd64

# Runtime packages. The agent execs ip (iproute2) and nsenter (util-linux); the iptables
# engine needs iptables; Node.js needs libstdc++6. Each list closes under shared-library
# dependencies (checked below with the image's own ld.so, so a missing one fails the build).
pkgs=(libc6 libgcc-s1 gcc-12-base libstdc++6 zlib1g libzstd1 libelf1 libbpf1
  iproute2 libbsd0 libmd0 libcap2 libdb5.3 libmnl0 libselinux1 libpcre2-8-0 libtirpc3 libtirpc-common
  libgssapi-krb5-2 libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1 libssl3
  libxtables12 iptables libip4tc2 libip6tc2 libnftnl11 libnetfilter-conntrack3 libnfnetlink0
  util-linux libblkid1 libmount1 libsmartcols1 libudev1 libuuid1 libcap-ng0 libcrypt1 libsystemd0 liblzma5 liblz4-1 libgcrypt20 libgpg-error0
  netbase)
$debug && pkgs+=(bash libtinfo6 bpftool libcap2-bin)

# 1. Debian packages, downloaded once into the cache and then taken from it: the cache pins
# the versions (a rebuild gives the same bytes whatever the archive did since; empty the
# cache to take updates) and makes rebuilds offline and fast.
mkdir -p "$cache/debs"
cached() { ls "$cache/debs/${1}_"*.deb 2>/dev/null | sort -V | tail -1; }
need=()
for p in "${pkgs[@]}"; do [ -n "$(cached "$p")" ] || need+=("$p"); done
if ((${#need[@]})); then
  say "downloading ${#need[@]} Debian packages into $cache/debs"
  (cd "$cache/debs" && apt-get download -qq "${need[@]}" >/dev/null)
fi
debs=()
for p in "${pkgs[@]}"; do
  f=$(cached "$p")
  [ -n "$f" ] || { say "no $p in $cache/debs after download"; exit 1; }
  debs+=("$f")
done

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
base=$work/base app=$work/app
mkdir -p "$base" "$app"

# Merged /usr, as Debian 12 lays it out: the packages' /lib, /bin, /sbin land in /usr.
mkdir -p "$base/usr/bin" "$base/usr/sbin" "$base/usr/lib" "$base/usr/lib64"
for d in bin sbin lib lib64; do ln -s "usr/$d" "$base/$d"; done
for f in "${debs[@]}"; do
  dpkg-deb --fsys-tarfile "$f" | tar -x --keep-directory-symlink -C "$base"
done
# Documentation goes, licences stay.
find "$base/usr/share/doc" -type f ! -name copyright -delete 2>/dev/null || true
rm -rf "$base/usr/share/man" "$base/usr/share/info" "$base/usr/share/lintian" "$base/usr/share/locale" "$base/usr/share/bash-completion"
# No shell in the default image: util-linux and friends bring none, but be sure.
$debug || rm -f "$base/usr/bin/sh" "$base/usr/bin/bash" "$base/usr/bin/dash"
mkdir -p "$base/etc" "$base/tmp" "$base/run" "$base/var/lib/meshwarp" "$base/proc" "$base/sys" "$base/dev"
chmod 1777 "$base/tmp"
mkdir -p "$base/var"
ln -s ../run "$base/var/run" # runtimes name netns as /var/run/netns/... (the chart mounts the host's there)
printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n' >"$base/etc/passwd"
printf 'root:x:0:\n' >"$base/etc/group"
printf 'hosts: files dns\n' >"$base/etc/nsswitch.conf"
$debug && ln -sf bash "$base/usr/bin/sh"

# 2. The project under /usr/lib/meshwarp.
p=$app/usr/lib/meshwarp
mkdir -p "$p/build/bpf" "$p/build/bin" "$p/build/cni" "$p/node_modules" "$app/usr/bin"
install -m 0755 .tools/node/bin/node "$app/usr/bin/node"
cp -r src package.json LICENSE LICENSES "$p/"
find "$p/src" -name '*.c' -delete
cp build/bpf/*.bpf.o "$p/build/bpf/"
cp build/bin/mw-sockcheck "$p/build/bin/"
cp -r build/js "$p/build/"  # the CLI bundle the launcher runs (make js, src/bundle.ts)
cp -r build/cni/linux-$arch "$p/build/cni/"
(cd build/cni/linux-$arch && sha256sum -c --quiet SHA256SUMS) || { say "build/cni/linux-$arch does not match its SHA256SUMS"; exit 1; }
[ -f "$p/build/cni/linux-$arch/meshwarp-cni-node" ] || { say "build/cni/linux-$arch/meshwarp-cni-node missing: make cni-sea"; exit 1; }
cp -r node_modules/koffi "$p/node_modules/"
(cd "$p/node_modules/koffi" && rm -rf doc src vendor && find build/koffi -mindepth 1 -maxdepth 1 ! -name linux_x64 -exec rm -rf {} +)
install -m 0755 build/image/meshwarp-launcher "$app/usr/bin/meshwarp"

# 3. Every ELF file's libraries resolve inside the image (its own ld.so, nothing from the host).
ldso=/usr/lib64/ld-linux-x86-64.so.2
merged=$work/check
mkdir -p "$merged"
cp -a "$base/." "$merged/"
cp -a "$app/." "$merged/"
bad=0
while IFS= read -r -d '' f; do
  head -c4 "$f" 2>/dev/null | grep -q $'^\x7fELF' || continue
  case $f in *.o) continue ;; esac
  miss=$(chroot "$merged" "$ldso" --list "${f#"$merged"}" 2>&1 | grep 'not found' || true)
  if [ -n "$miss" ]; then say "${f#"$merged"}: $miss"; bad=1; fi
done < <(find "$merged/usr/bin" "$merged/usr/sbin" "$merged/usr/lib/meshwarp/build/bin" "$merged/usr/lib/meshwarp/node_modules/koffi/build" -type f -print0)
[ "$bad" = 0 ] || { say "unresolved libraries (add the package to pkgs)"; exit 1; }
env -u NODE_EXTRA_CA_CERTS chroot "$merged" /usr/bin/node -e 'require("/usr/lib/meshwarp/node_modules/koffi").load("libbpf.so.1")' \
  || { say "koffi cannot load libbpf.so.1 in the image"; exit 1; }

# 4. Layers: sorted, 0:0, fixed mtimes, no atime/ctime, gzip without name or time.
layer() {
  find "$1" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  tar -C "$1" --sort=name --format=posix --numeric-owner --owner=0 --group=0 --mtime="@$SOURCE_DATE_EPOCH" \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime -cf "$2" .
}
layer "$base" "$work/base.tar"
layer "$app" "$work/app.tar"

rm -rf "$out.tmp"
mkdir -p "$(dirname "$out")"
if [ -d "$out" ]; then cp -a "$out" "$out.tmp"; else umoci init --layout "$out.tmp"; fi
umoci new --image "$out.tmp:$tag"
umoci raw add-layer --image "$out.tmp:$tag" --history.created="$created" --history.created_by="debian packages: ${pkgs[*]}" "$work/base.tar"
umoci raw add-layer --image "$out.tmp:$tag" --history.created="$created" --history.created_by="meshwarp $version" "$work/app.tar"
umoci config --image "$out.tmp:$tag" --created="$created" --history.created="$created" --history.created_by="config" \
  --author="meshwarp" --os=linux --architecture=$arch \
  --config.entrypoint=/usr/bin/meshwarp --config.cmd=agent --config.workingdir=/ \
  --config.env=PATH=/usr/sbin:/usr/bin \
  --config.label=org.opencontainers.image.version="$version" \
  --config.label=org.opencontainers.image.source=https://github.com/meshwarp/meshwarp \
  --config.label=org.opencontainers.image.title="meshwarp agent$($debug && echo ' (debug)' || true)"
umoci gc --layout "$out.tmp"
rm -rf "$out"
mv "$out.tmp" "$out"
digest=$(.tools/node/bin/node -e 'const [f, t] = process.argv.slice(1); const m = JSON.parse(require("fs").readFileSync(f, "utf8")).manifests.find((x) => x.annotations?.["org.opencontainers.image.ref.name"] === t); process.stdout.write(m.digest)' "$out/index.json" "$tag")
say "built $repo:$tag in $out (manifest $digest)"
printf '%s %s:%s %s\n' "$digest" "$repo" "$tag" "$out"
