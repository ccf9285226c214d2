#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install the packages it needs (scripts/packages.txt, groups
# build and run), build ironmesh in release mode, install its four binaries into /usr/local/bin, and run the
# seed walkthrough end to end (`ironmesh demo`) on a local cluster of its own. Extra arguments go to
# `ironmesh demo` (e.g. --keep to leave the cluster up and explore it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: run as root (sudo -i first): the local runtime creates network namespaces and iptables rules" >&2
  exit 1
fi
source scripts/phases.sh
export PATH="$HOME/.cargo/bin:$PATH"
bin_dir=${IRONMESH_INSTALL_DIR:-/usr/local/bin}
phases_begin 4

phase "system packages: scripts/install-deps.sh build run" "under a minute; nothing to do when present"
./scripts/install-deps.sh build run

phase "release build: cargo build --release --workspace" "~11 min on 2 cores the first time, seconds after"
cargo build --release --workspace

phase "install: ironmesh, ironmesh-control-plane, ironmesh-proxy, ironmesh-httpbin into $bin_dir" "a second"
install -m 0755 target/release/ironmesh target/release/ironmesh-control-plane target/release/ironmesh-proxy target/release/ironmesh-httpbin "$bin_dir/"
echo "installed: $(command -v ironmesh || echo "$bin_dir/ironmesh (add $bin_dir to PATH)") ($(ironmesh --version 2>/dev/null || "$bin_dir/ironmesh" --version))"

phase "walkthrough: ironmesh demo $*" "~20 s"
"$bin_dir/ironmesh" demo "$@"
phases_end
echo "ironmesh is installed in $bin_dir: type \`ironmesh up\` to start a cluster (README, \"Using it\")"
