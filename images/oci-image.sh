#!/usr/bin/env bash
# Writes a one-layer OCI image archive (an OCI image layout, tarred) from a root filesystem directory, for
# `ctr -n k8s.io images import`: no registry is reachable from the test machines, so images are built and
# imported, never pulled. The layer is uncompressed and reproducible (sorted names, zero mtimes, root
# owner): the same rootfs gives the same image id.
#   images/oci-image.sh ROOTFS NAME OUT.tar [--entrypoint JSON] [--cmd JSON] [--env JSON] [--workdir DIR]
# NAME is the full reference the image is imported under (docker.io/library/busybox:1.35.0); JSON values
# are JSON arrays, as in an image config (["/bin/sh","-c"]).
set -euo pipefail
usage() { echo "usage: $0 ROOTFS NAME OUT.tar [--entrypoint JSON] [--cmd JSON] [--env JSON] [--workdir DIR]" >&2; exit 2; }
(($# >= 3)) || usage
rootfs=$1 name=$2 out=$3
shift 3
entrypoint=null cmd=null workdir=/
env='["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]'
while (($#)); do
  (($# >= 2)) || usage
  case $1 in
    --entrypoint) entrypoint=$2 ;;
    --cmd) cmd=$2 ;;
    --env) env=$2 ;;
    --workdir) workdir=$2 ;;
    *) usage ;;
  esac
  shift 2
done
[[ -d $rootfs ]] || { echo "oci-image: $rootfs is not a directory" >&2; exit 1; }
# A tag is what follows the last ':' after the last '/'; a digest-less name without one is :latest.
last=${name##*/}
[[ $last == *:* ]] || { echo "oci-image: $name has no tag; give one (an untagged image is pulled on every start)" >&2; exit 1; }
tag=${last##*:}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/blobs/sha256"

blob() { # file mediatype: moves the file into blobs/ and prints its descriptor
  local digest size
  digest=$(sha256sum "$1" | cut -d' ' -f1)
  size=$(stat -c %s "$1")
  mv "$1" "$work/blobs/sha256/$digest"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%s}' "$2" "$digest" "$size"
}

tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=posix \
  --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
  -C "$rootfs" -cf "$work/layer.tar" .
diff_id=$(sha256sum "$work/layer.tar" | cut -d' ' -f1)
layer=$(blob "$work/layer.tar" application/vnd.oci.image.layer.v1.tar)

printf '{"architecture":"amd64","os":"linux","config":{"Env":%s,"Entrypoint":%s,"Cmd":%s,"WorkingDir":"%s"},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]},"history":[{"created_by":"ironmesh images/oci-image.sh"}]}' \
  "$env" "$entrypoint" "$cmd" "$workdir" "$diff_id" >"$work/config.json"
config=$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)

printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' \
  "$config" "$layer" >"$work/manifest.json"
manifest=$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)

# containerd names the imported image after io.containerd.image.name; ref.name is the OCI layout's own
# (tag only) name, for other readers of the archive.
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[%s]}' \
  "${manifest%\}},\"platform\":{\"architecture\":\"amd64\",\"os\":\"linux\"},\"annotations\":{\"io.containerd.image.name\":\"$name\",\"org.opencontainers.image.ref.name\":\"$tag\"}}" \
  >"$work/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"

mkdir -p "$(dirname "$out")"
tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$work" -cf "$out.tmp" oci-layout index.json blobs
mv "$out.tmp" "$out"
