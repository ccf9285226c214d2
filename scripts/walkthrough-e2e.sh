#!/usr/bin/env bash
# End to end, as root, on release binaries: `ironmesh demo` (the seed walkthrough with its results table),
# then the acceptance script that types the walkthrough as a user would, when the shared folder is beside
# this checkout (as in CI); without it that step is counted as skipped, never as passed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --workspace
export PATH="$PWD/target/release:$PATH"
passed=0 failed=0 skipped=0
run() { # name command...
  local name=$1; shift
  echo "-- $name"
  if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $name"; fi
}
home=$(mktemp -d -t ironmesh-demo.XXXXXX)
run "ironmesh demo" env IRONMESH_HOME="$home" ironmesh demo
rm -rf "$home"
acceptance=../shared/acceptance/walkthrough.sh
if [[ -x $acceptance ]]; then
  run "acceptance walkthrough" "$acceptance"
else
  echo "-- acceptance walkthrough: SKIPPED ($acceptance not found beside this checkout)"
  skipped=$((skipped + 1))
fi
echo "walkthrough: $passed passed, $failed failed, $skipped skipped"
((failed == 0))
