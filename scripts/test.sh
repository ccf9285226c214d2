#!/usr/bin/env bash
# The whole test suite, as CI runs it (as root: the runtime and proxy tests build network namespaces).
# Phases: packages, format, lints, test build, tests (unit, in-process, root netns tests, CLI end to end),
# release build, the seed walkthrough on a fresh local cluster, the benchmark harness in quick mode. The last
# line is the count CI reads: `suite: N passed, N failed, N skipped` (ignored tests and skipped steps are
# skipped, never passed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "test.sh: run as root (sudo -i first): the local runtime tests create network namespaces and iptables rules" >&2
  exit 1
fi
source scripts/phases.sh
export PATH="$HOME/.cargo/bin:$PATH"
mkdir -p target
phases_begin 8

phase "system packages: scripts/install-deps.sh build run test bench" "1-2 min the first time; nothing to do when present"
./scripts/install-deps.sh build run test bench

phase "format: cargo fmt --all --check" "seconds"
cargo fmt --all -- --check

phase "lints: cargo clippy --workspace --all-targets -D warnings, and ring as the only crypto provider" "~2-3 min on 2 cores the first time"
cargo clippy --workspace --all-targets -- -D warnings
if cargo tree -e normal -i aws-lc-rs >/dev/null 2>&1; then
  phase_fail "aws-lc-rs is in the dependency tree (cargo tree -i aws-lc-rs); the project uses ring only"
fi

phase "test build: cargo test --workspace --no-run, and the binaries the CLI's root tests run" "~7 min on 2 cores the first time"
cargo test --workspace --no-run
# The same command the CLI tests' harness runs (crates/cli/tests/common): built here, visibly, and not a
# second time, silently, inside the tests phase.
cargo build -p ironmesh-proxy -p ironmesh-samples

phase "tests: cargo test --workspace --no-fail-fast (output also in target/test-output.log)" "~5-12 min; root tests build network namespaces"
# `|| ...` keeps errexit and the ERR trap out of it: the failures are listed below first.
tests_status=0
cargo test --workspace --no-fail-fast 2>&1 | tee target/test-output.log || tests_status=$?
count() { # passed|failed|ignored: the sum over cargo's `test result:` lines
  { grep -E '^test result:' target/test-output.log || true; } | { grep -oE "[0-9]+ $1" || true; } | awk '{ n += $1 } END { print n + 0 }'
}
tests_passed=$(count passed) tests_failed=$(count failed) tests_ignored=$(count ignored)
echo "cargo test: $tests_passed passed, $tests_failed failed, $tests_ignored ignored"
if ((tests_status != 0)); then
  grep -E '^test .* FAILED$|^error: .*(failed|could not compile)' target/test-output.log >&2 || true
  phase_fail "cargo test: $tests_failed failed ($tests_passed passed): the failing tests are listed above; the whole output is target/test-output.log"
fi

phase "release build: cargo build --release --workspace" "~11 min on 2 cores the first time; seconds after scripts/demo.sh"
cargo build --release --workspace

phase "walkthrough: scripts/walkthrough-e2e.sh (ironmesh demo, then the acceptance script when present)" "~1 min"
./scripts/walkthrough-e2e.sh | tee target/walkthrough-output.log
walk() { { grep -E '^walkthrough: ' target/walkthrough-output.log || true; } | { grep -oE "[0-9]+ $1" || true; } | awk '{ n += $1 } END { print n + 0 }'; }

phase "benchmark harness: bench/run --quick (proves it runs end to end; no timing assertions)" "~3 min"
./bench/run --quick --results-dir target/bench-quick
phases_end

echo
echo "== summary"
echo "cargo test: $tests_passed passed, $tests_failed failed, $tests_ignored ignored (counted as skipped)"
echo "walkthrough: $(walk passed) passed, $(walk failed) failed, $(walk skipped) skipped; benchmark harness: ran"
echo "suite: $((tests_passed + $(walk passed) + 1)) passed, $((tests_failed + $(walk failed))) failed, $((tests_ignored + $(walk skipped))) skipped"
