#!/usr/bin/env bash
# Builds the OCI image archives the test cluster's nodes import (scripts/k8s-env.sh): the pod sandbox
# ("pause") image containerd runs for every pod, a busybox image for the cluster checks, and, when our
# binaries are built, the images the seed's manifests and `ironmesh kube-inject` name: the samples
# (docker.io/citizenstig/httpbin: our ironmesh-httpbin; docker.io/pstauffer/curl: Debian's curl) and the
# sidecar (docker.io/ironmesh/proxy: ironmesh-proxy and iptables) and the control plane
# (docker.io/ironmesh/control-plane: ironmesh-control-plane). Each archive is written once into
# OUT_DIR (default target/k8s-images) and rebuilt when its inputs change.
#   images/build.sh [OUT_DIR]      # prints one line per image: NAME ARCHIVE
# Environment: IRONMESH_BIN_DIR, where ironmesh-httpbin and ironmesh-proxy are (default target/release);
# without them those images are left out, with a note on stderr. IRONMESH_K8S_BIN: scripts/k8s-build.sh's
# bin dir, for the cluster DNS image (CoreDNS).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/k8s-images}")
mkdir -p "$out"

# The names the images are imported under. PAUSE is the sandbox image of containerd's configuration
# (scripts/k8s-env.sh); the tag of Kubernetes 1.34's own pause image.
PAUSE=registry.k8s.io/pause:3.10.1
BUSYBOX=docker.io/library/busybox:1.35.0

build_if_changed() { # name archive inputs-hash builder...
  local name=$1 archive=$2 hash=$3
  shift 3
  if [[ ! -f $archive || $(cat "$archive.inputs" 2>/dev/null) != "$hash" ]]; then
    "$@"
    echo "$hash" >"$archive.inputs"
  fi
  echo "$name $archive"
}

build_pause() {
  local root
  root=$(mktemp -d)
  # A static binary: the image has nothing else in it.
  gcc -static -O2 -Wall -Wextra -Werror -s -o "$root/pause" images/pause/pause.c
  images/oci-image.sh "$root" "$PAUSE" "$out/pause.tar" --entrypoint '["/pause"]'
  rm -rf "$root"
}
build_if_changed "$PAUSE" "$out/pause.tar" \
  "$(cat images/pause/pause.c images/oci-image.sh | sha256sum | cut -d' ' -f1)" build_pause

busybox_bin=/bin/busybox
build_busybox() {
  local root applet
  [[ $(file -b "$busybox_bin" 2>/dev/null || ldd "$busybox_bin" 2>&1) == *static* ]] ||
    { echo "images: $busybox_bin is not static; install busybox-static (scripts/packages.txt, group k8s)" >&2; exit 1; }
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
  chmod 1777 "$root/tmp"
  cp "$busybox_bin" "$root/bin/busybox"
  for applet in $("$busybox_bin" --list); do
    [[ $applet == busybox ]] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnobody:x:65534:\n' >"$root/etc/group"
  images/oci-image.sh "$root" "$BUSYBOX" "$out/busybox.tar" --cmd '["sh"]'
  rm -rf "$root"
}
build_if_changed "$BUSYBOX" "$out/busybox.tar" \
  "$( (cat images/oci-image.sh; sha256sum "$busybox_bin" 2>/dev/null) | sha256sum | cut -d' ' -f1)" build_busybox

# The cluster DNS: scripts/k8s-build.sh's CoreDNS (static), when IRONMESH_K8S_BIN names its bin dir.
# Named for what it is, a local build with a few plugins, not the upstream image.
COREDNS=localhost/ironmesh/coredns:v1.14.0
build_coredns() {
  local root
  root=$(mktemp -d)
  mkdir -p "$root/etc/coredns" "$root/tmp"
  cp "$IRONMESH_K8S_BIN/coredns" "$root/coredns"
  images/oci-image.sh "$root" "$COREDNS" "$out/coredns.tar" --entrypoint '["/coredns"]'
  rm -rf "$root"
}
if [[ -n ${IRONMESH_K8S_BIN:-} ]]; then
  build_if_changed "$COREDNS" "$out/coredns.tar" \
    "$( (cat images/oci-image.sh; sha256sum "$IRONMESH_K8S_BIN/coredns") | sha256sum | cut -d' ' -f1)" build_coredns
fi

# ---------- images from our binaries and Debian's ----------

# Names as the manifests spell them: untagged is :latest (they set imagePullPolicy: IfNotPresent, so the
# imported image is used and nothing is pulled). The sidecar's is the name `ironmesh kube-inject` writes
# (crates/cli/src/inject.rs): tagged with the release, the workspace's version.
HTTPBIN=docker.io/citizenstig/httpbin:latest
CURL=docker.io/pstauffer/curl:latest
version=$(sed -n '/^\[workspace.package\]/,/^\[/{s/^version = "\(.*\)"$/\1/p}' Cargo.toml)
[[ -n $version ]] || { echo "images: no version in Cargo.toml's [workspace.package]" >&2; exit 1; }
PROXY=docker.io/ironmesh/proxy:$version
bin_dir=$(realpath -m "${IRONMESH_BIN_DIR:-target/release}")

with_libs() { # root file...: copies each executable and every shared library it loads to the same path
  local root=$1 file lib
  shift
  for file in "$@"; do
    mkdir -p "$root$(dirname "$file")"
    cp -L "$file" "$root$file"
    for lib in $(ldd "$file" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }'); do
      [[ -e $root$lib ]] && continue
      mkdir -p "$root$(dirname "$lib")"
      cp -L "$lib" "$root$lib"
    done
  done
}

base_root() { # root: busybox as /bin/sh and friends (exec into a sample pod works), passwd, tmp
  local root=$1 applet
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
  chmod 1777 "$root/tmp"
  cp "$busybox_bin" "$root/bin/busybox"
  for applet in $("$busybox_bin" --list); do
    [[ $applet == busybox || -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nistio-proxy:x:1337:1337::/tmp:/bin/false\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nistio-proxy:x:1337:\nnobody:x:65534:\n' >"$root/etc/group"
}

inputs_of() { # file...: a hash of the files' contents and this script's
  (cat images/oci-image.sh images/build.sh; sha256sum "$@") | sha256sum | cut -d' ' -f1
}

build_httpbin() {
  local root
  root=$(mktemp -d)
  base_root "$root"
  with_libs "$root" "$bin_dir/ironmesh-httpbin"
  mv "$root$bin_dir/ironmesh-httpbin" "$root/bin/ironmesh-httpbin"
  rm -rf "${root:?}$bin_dir"
  # citizenstig/httpbin serves on 8000, which the manifest's containerPort says.
  images/oci-image.sh "$root" "$HTTPBIN" "$out/httpbin.tar" --entrypoint '["/bin/ironmesh-httpbin","--port","8000"]'
  rm -rf "$root"
}
if [[ -x $bin_dir/ironmesh-httpbin ]]; then
  build_if_changed "$HTTPBIN" "$out/httpbin.tar" "$(inputs_of "$bin_dir/ironmesh-httpbin" "$busybox_bin")" build_httpbin
else
  echo "images: no $bin_dir/ironmesh-httpbin (cargo build --release -p ironmesh-samples, or set IRONMESH_BIN_DIR): $HTTPBIN left out" >&2
fi

build_curl() {
  local root
  root=$(mktemp -d)
  base_root "$root"
  rm -f "$root/bin/wget"
  with_libs "$root" /usr/bin/curl
  # Without a certificate bundle: the walkthrough's requests are plain HTTP to mesh services.
  images/oci-image.sh "$root" "$CURL" "$out/curl.tar" --cmd '["/bin/sh"]'
  rm -rf "$root"
}
if command -v curl >/dev/null; then
  build_if_changed "$CURL" "$out/curl.tar" "$(inputs_of /usr/bin/curl "$busybox_bin")" build_curl
else
  echo "images: curl is not installed (scripts/packages.txt, group run): $CURL left out" >&2
fi

build_proxy() {
  local root multi tool
  root=$(mktemp -d)
  base_root "$root"
  with_libs "$root" "$bin_dir/ironmesh-proxy"
  mkdir -p "$root/usr/local/bin"
  mv "$root$bin_dir/ironmesh-proxy" "$root/usr/local/bin/ironmesh-proxy"
  rm -rf "${root:?}$bin_dir"
  # istio-init's part: ironmesh-proxy iptables --apply runs iptables-restore; the same backend as the
  # host's (nft or legacy), with the match and target modules it loads at run time.
  multi=$(readlink -f /usr/sbin/iptables-restore)
  with_libs "$root" "$multi" /usr/lib/x86_64-linux-gnu/xtables/*.so
  for tool in iptables iptables-restore iptables-save; do
    ln -sf "$(basename "$multi")" "$root/usr/sbin/$tool"
  done
  images/oci-image.sh "$root" "$PROXY" "$out/proxy.tar" --cmd '["ironmesh-proxy","run"]'
  rm -rf "$root"
}
if [[ -x $bin_dir/ironmesh-proxy ]]; then
  build_if_changed "$PROXY" "$out/proxy.tar" \
    "$(inputs_of "$bin_dir/ironmesh-proxy" "$(readlink -f /usr/sbin/iptables-restore)" "$busybox_bin") $PROXY" build_proxy
else
  echo "images: no $bin_dir/ironmesh-proxy (cargo build --release -p ironmesh-proxy, or set IRONMESH_BIN_DIR): $PROXY left out" >&2
fi

# The control plane (`ironmesh install`'s Deployment, crates/kube/src/install.rs): the name install
# writes, tagged with the release. It runs as uid 1337 with a read-only root; its home is an emptyDir.
CONTROL_PLANE=docker.io/ironmesh/control-plane:$version
build_control_plane() {
  local root
  root=$(mktemp -d)
  base_root "$root"
  with_libs "$root" "$bin_dir/ironmesh-control-plane"
  mkdir -p "$root/usr/local/bin"
  mv "$root$bin_dir/ironmesh-control-plane" "$root/usr/local/bin/ironmesh-control-plane"
  rm -rf "${root:?}$bin_dir"
  images/oci-image.sh "$root" "$CONTROL_PLANE" "$out/control-plane.tar" --cmd '["ironmesh-control-plane","run"]'
  rm -rf "$root"
}
if [[ -x $bin_dir/ironmesh-control-plane ]]; then
  build_if_changed "$CONTROL_PLANE" "$out/control-plane.tar" \
    "$(inputs_of "$bin_dir/ironmesh-control-plane" "$busybox_bin") $CONTROL_PLANE" build_control_plane
else
  echo "images: no $bin_dir/ironmesh-control-plane (cargo build --release -p ironmesh-control, or set IRONMESH_BIN_DIR): $CONTROL_PLANE left out" >&2
fi
