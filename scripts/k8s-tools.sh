#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# Builds the Kubernetes test dependencies at pinned versions into a cache
# outside the repo: etcd, kube-apiserver, helm, kubeconform. Idempotent: a tool
# whose binary is in the cache is not rebuilt. Prints the bin directory
# (`--bin-dir` prints it without building).
#   MESHWARP_K8S_TOOLS  cache root (default /var/cache/meshwarp/k8s-tools)
# First run on a fresh machine: see README (kube-apiserver dominates).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
HELM_VERSION=v3.22.0
KUBECONFORM_VERSION=v0.8.0

ROOT=${MESHWARP_K8S_TOOLS:-/var/cache/meshwarp/k8s-tools}
KEY="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_kubeconform-${KUBECONFORM_VERSION}"
BIN="$ROOT/$KEY/bin"
[[ "${1:-}" == --bin-dir ]] && { echo "$BIN"; exit 0; }
mkdir -p "$BIN" "$ROOT/$KEY/work"
log() { echo "k8s-tools: $*" >&2; }

command -v go >/dev/null || { echo "k8s-tools: needs Go >= 1.26 (not found)" >&2; exit 1; }
gov=$(go env GOVERSION); gov=${gov#go}
[[ $(printf '%s\n1.26\n' "${gov%.*}" | sort -V | head -1) == 1.26 ]] || { echo "k8s-tools: needs Go >= 1.26 (have $gov)" >&2; exit 1; }

export GOFLAGS="-mod=mod -buildvcs=false -trimpath"
export CGO_ENABLED=0
LDFLAGS="-s -w"

# Builds tool $1 (binary name) from package $2 inside the pinned module dir $3
# (test/k8s-tools/<dir>, its go.sum kept in the repo once resolved).
build_in_module() {
  local name=$1 pkg=$2 dir=$3
  [[ -x "$BIN/$name" ]] && return 0
  local work="$ROOT/$KEY/work/$name" t0=$SECONDS
  rm -rf "$work"; mkdir -p "$work"
  cp "$REPO/test/k8s-tools/$dir/go.mod" "$work/"
  [[ -f "$REPO/test/k8s-tools/$dir/go.sum" ]] && cp "$REPO/test/k8s-tools/$dir/go.sum" "$work/"
  log "building $name ($pkg) ..."
  (cd "$work" && go mod download && go build -ldflags="$LDFLAGS" -o "$BIN/.$name.tmp" "$pkg")
  mv "$BIN/.$name.tmp" "$BIN/$name"
  [[ -f "$REPO/test/k8s-tools/$dir/go.sum" ]] || cp "$work/go.sum" "$REPO/test/k8s-tools/$dir/go.sum" 2>/dev/null || true
  log "built $name in $((SECONDS - t0)) s"
}

# helm and kubeconform are plain `go install pkg@version` (their go.mod has no replace).
install_at() {
  local name=$1 pkg=$2 version=$3
  [[ -x "$BIN/$name" ]] && return 0
  local t0=$SECONDS
  log "building $name ($pkg@$version) ..."
  GOFLAGS="-buildvcs=false -trimpath" GOBIN="$ROOT/$KEY/work/gobin" go install -ldflags="$LDFLAGS" "$pkg@$version"
  mv "$ROOT/$KEY/work/gobin/$name" "$BIN/$name"
  log "built $name in $((SECONDS - t0)) s"
}

want=${*:-etcd kube-apiserver helm kubeconform}
for tool in $want; do
  case $tool in
    etcd)           build_in_module etcd go.etcd.io/etcd/server/v3 etcd ;;
    kube-apiserver) build_in_module kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver kube ;;
    helm)           install_at helm helm.sh/helm/v3/cmd/helm "$HELM_VERSION" ;;
    kubeconform)    install_at kubeconform github.com/yannh/kubeconform/cmd/kubeconform "$KUBECONFORM_VERSION" ;;
    *) echo "k8s-tools: unknown tool $tool" >&2; exit 2 ;;
  esac
done
echo "$BIN"
