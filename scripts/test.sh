#!/usr/bin/env bash
# The whole test suite, as CI runs it (as root: the runtime and proxy tests build network namespaces).
# 1. formatting and lints, 2. every crate's tests (unit, in-process, root netns tests, CLI end to end),
# 3. the seed walkthrough typed as a user would, on a fresh local cluster (release build),
# 4. the benchmark harness in its quick mode.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
step() { printf '\n== %s\n' "$*"; }
if [[ $(id -u) -ne 0 ]]; then
  echo "test.sh: run as root (sudo): the local runtime tests create network namespaces and iptables rules" >&2
  exit 1
fi
./scripts/install-deps.sh
step "format"
cargo fmt --all -- --check
step "lints"
cargo clippy --workspace --all-targets -q -- -D warnings
step "crypto provider: ring only"
if cargo tree -e normal -i aws-lc-rs >/dev/null 2>&1; then echo "aws-lc-rs is in the tree; use ring only" >&2; exit 1; fi
step "tests"
cargo build --workspace -q
cargo test --workspace -q 2>&1 | tee target/test-output.log
step "walkthrough"
./scripts/walkthrough-e2e.sh
step "benchmark harness, quick mode (proves it runs end to end; no timing assertions)"
./bench/install-deps.sh
./bench/run --quick --results-dir target/bench-quick
step "summary"
sum() { grep -o "[0-9]* $1" target/test-output.log | awk '{ total += $1 } END { print total + 0 }'; }
echo "walkthrough and demo: passed; benchmark harness: ran"
echo "suite: $(sum passed) passed, $(sum failed) failed"
