#!/usr/bin/env bash
# The main job on a fresh Debian 12 machine: install what the local runtime needs, build ironmesh, and run
# the seed walkthrough end to end (`ironmesh demo`) on a local cluster of its own. Extra arguments go to
# `ironmesh demo` (e.g. --keep to leave the cluster up and explore it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "demo.sh: run as root (sudo): the local runtime creates network namespaces and iptables rules" >&2
  exit 1
fi
./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release --workspace -q
export PATH="$PWD/target/release:$PATH"
exec ironmesh demo "$@"
