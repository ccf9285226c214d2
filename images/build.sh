#!/usr/bin/env bash
# Builds the OCI image archives the test cluster's nodes import (scripts/k8s-env.sh): the pod sandbox
# ("pause") image containerd runs for every pod, and a busybox image for the cluster checks. Each archive
# is written once into OUT_DIR (default target/k8s-images) and rebuilt when its inputs change.
#   images/build.sh [OUT_DIR]      # prints one line per image: NAME ARCHIVE
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
