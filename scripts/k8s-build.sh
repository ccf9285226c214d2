#!/usr/bin/env bash
# Builds the real Kubernetes components the Kubernetes-mode tests run against (kube-apiserver,
# kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl), etcd and the cluster DNS
# (CoreDNS), from the Go module proxy by module name as test/k8s/go.mod and test/k8s/coredns/go.mod pin
# them, once, into a cache folder; prints that folder.
# Idempotent: when every binary is there and was built from the same go.mod/go.sum, it does nothing.
#   scripts/k8s-build.sh            # prints the bin dir (the only line on stdout)
# Environment: IRONMESH_K8S_CACHE (default /var/cache/ironmesh/k8s), IRONMESH_GO_CACHE (default
# /var/cache/ironmesh/go: module and build caches, kept so a second build is warm), K8S_BUILD_LOG.
# A cold build takes ~16 min wall on 2 cores (13 min CPU); it runs under `nice`.
set -euo pipefail
cd "$(dirname "$0")/.."
module=test/k8s
version=$(awk '$1 == "k8s.io/kubernetes" { print $2; exit }' "$module/go.mod")
[[ -n $version ]] || { echo "k8s-build: no k8s.io/kubernetes line in $module/go.mod" >&2; exit 1; }
cache=${IRONMESH_K8S_CACHE:-/var/cache/ironmesh/k8s}/$version
bin=$cache/bin
go_cache=${IRONMESH_GO_CACHE:-/var/cache/ironmesh/go}
components=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl etcd coredns)

command -v go >/dev/null || { echo "k8s-build: needs Go 1.24 or newer (go on PATH)" >&2; exit 1; }

# What the binaries were built from: both modules' go.mod and go.sum, the entry points we wrote and the
# Go version. A change to any of them rebuilds.
stamp=$(cat "$module/go.mod" "$module/go.sum" "$module/cmd/etcd/main.go" \
  "$module/coredns/go.mod" "$module/coredns/go.sum" "$module/coredns/main.go" <(go version) | sha256sum | cut -d' ' -f1)
up_to_date() {
  [[ -f $bin/.stamp && $(cat "$bin/.stamp") == "$stamp" ]] || return 1
  local c
  for c in "${components[@]}"; do [[ -x $bin/$c ]] || return 1; done
}
if up_to_date; then
  echo "$bin"
  exit 0
fi

mkdir -p "$bin" "$go_cache"
# One build at a time per cache: a second caller (another checkout, a test run beside a manual build) waits,
# then finds the binaries the first one built.
exec 9>"$cache/.build.lock"
flock 9
if up_to_date; then
  echo "$bin"
  exit 0
fi
export GOMODCACHE=$go_cache/mod GOCACHE=$go_cache/build GOFLAGS=-mod=mod
# Static binaries as Kubernetes' own release builds them (no cgo); GOTOOLCHAIN=local: build with the Go
# that is installed, never download another.
export CGO_ENABLED=0 GOTOOLCHAIN=local
# The version the components report (kubectl version, the Node's kubeletVersion), as Kubernetes' own
# build stamps it (hack/lib/version.sh): without it they say v0.0.0-master.
major=${version#v}; major=${major%%.*}
minor=${version#v*.}; minor=${minor%%.*}
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $pkg.gitVersion=$version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
done

started=$(date +%s)
echo "k8s-build: building Kubernetes $version and etcd into $bin (cold: ~16 min on 2 cores)" >&2
(
  cd "$module"
  # `tool` is the go.mod's tool lines: the six Kubernetes commands; ./cmd/etcd is etcd's entry point.
  nice -n 15 go build -trimpath -ldflags="$ldflags" -o "$bin/" tool ./cmd/etcd
  cd coredns
  nice -n 15 go build -trimpath -ldflags="-s -w" -o "$bin/coredns" .
) >&2
for c in "${components[@]}"; do
  [[ -x $bin/$c ]] || { echo "k8s-build: $c was not built into $bin" >&2; exit 1; }
done
echo "$stamp" >"$bin/.stamp"
echo "k8s-build: built in $(($(date +%s) - started)) s" >&2
echo "$bin"
