#!/usr/bin/env bash
# The whole test suite, as CI runs it (as root: the runtime and proxy tests build network namespaces).
# Phases: packages, format, lints, test build, the Kubernetes components (scripts/k8s-build.sh), tests (unit,
# in-process, root netns tests, CLI end to end, the real-apiserver tests), release build, the seed walkthrough
# on a fresh local cluster, the benchmark harness in quick mode, the real Kubernetes test cluster end to end
# (scripts/k8s-check.sh), the seed's walkthrough with real kubectl on that cluster (scripts/k8s-walkthrough.sh).
# The last line is the count CI reads: `suite: N passed, N failed, N skipped` (ignored tests and skipped steps
# are skipped, never passed).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -ne 0 ]]; then
  echo "test.sh: run as root (sudo -i first): the local runtime tests create network namespaces and iptables rules" >&2
  exit 1
fi
source scripts/phases.sh
# Go (1.24+, not Debian's) builds the test cluster's components; /usr/local/go is where its release unpacks.
export PATH="$HOME/.cargo/bin:/usr/local/go/bin:$PATH"
mkdir -p target
phases_begin 11

phase "system packages: scripts/install-deps.sh build run test bench k8s" "1-2 min the first time; nothing to do when present"
./scripts/install-deps.sh build run test bench k8s

phase "format: cargo fmt --all --check" "seconds"
cargo fmt --all -- --check

phase "lints: cargo clippy --workspace --all-targets -D warnings, and ring as the only crypto provider" "~2-3 min on 2 cores the first time"
cargo clippy --workspace --all-targets -- -D warnings
# ring only, by measurement (bench/crypto-provider; BENCHMARKS.md, "Issue 15: the crypto provider"): aws-lc-rs
# was 8% cheaper per mutual-TLS handshake, ~11% per AES-256-GCM byte sealed and level on open (0.03 cycles per
# byte, against a relay that spends far more per byte in copies and syscalls), held ~170 bytes more per connection,
# and its C library (aws-lc-sys: cc and cmake) adds minutes to every build. Not worth the switch; this keeps it out.
if cargo tree -e normal -i aws-lc-rs >/dev/null 2>&1; then
  phase_fail "aws-lc-rs is in the dependency tree (cargo tree -e normal -i aws-lc-rs shows who brings it): the mesh uses ring (BENCHMARKS.md, \"Issue 15: the crypto provider\"); give rustls, tokio-rustls or rcgen default-features = false and the ring feature"
fi

phase "test build: cargo test --workspace --no-run, and the binaries the CLI's root tests run" "~7 min on 2 cores the first time"
cargo test --workspace --no-run
# The same command the CLI tests' harness runs (crates/cli/tests/common): built here, visibly, and not a
# second time, silently, inside the tests phase.
cargo build -p ironmesh-proxy -p ironmesh-samples

# Before the tests: crates/kube's and crates/control's real_apiserver tests run these binaries (each starts
# its own `scripts/k8s-env.sh up --control-plane-only` in a state dir of its own and brings it down on drop;
# cargo runs test binaries one after another, and each refuses to start beside a running cluster, so none
# is left for k8s-check's cluster, which comes up only in the last phase).
phase "kubernetes build: scripts/k8s-build.sh" "cold ~16 min on 2 cores; warm ~1 min; nothing to do when built from the same go.mod"
./scripts/k8s-build.sh

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

# It brings the cluster up (nodes, containerd, images of the release binaries), checks, brings it down
# and checks that nothing is left; a failed check still prints the summary, then fails the suite.
phase "kubernetes cluster: scripts/k8s-check.sh (output also in target/k8s-check-output.log)" "~1.5 min; cold images ~1 min more"
k8s_status=0
./scripts/k8s-check.sh 2>&1 | tee target/k8s-check-output.log || k8s_status=$?
k8s() { { grep -E '^k8s-check: [0-9]' target/k8s-check-output.log || true; } | { grep -oE "[0-9]+ $1" || true; } | awk '{ n += $1 } END { print n + 0 }'; }
# A check script that died before its count line counts as one failure, never as nothing; what it brought
# up comes down (logs kept), or the next run's real-apiserver tests would refuse to start beside it.
k8s_died=0
if ((k8s_status != 0 && $(k8s failed) == 0)); then
  k8s_died=1
  ./scripts/k8s-env.sh down || true
fi

# Then the seed's walkthrough with real kubectl on a cluster of its own (up, `ironmesh install`, both
# injection passes, down): each of its outcomes counts, and a script that died before its count line is
# one failure.
phase "kubernetes walkthrough: scripts/k8s-walkthrough.sh, kube-inject and label passes (output also in target/k8s-walkthrough-output.log)" "4-8 min on 2 cores: up, install, both passes, down"
kw_status=0
./scripts/k8s-walkthrough.sh 2>&1 | tee target/k8s-walkthrough-output.log || kw_status=$?
kw_line=$({ grep -E '^k8s-walkthrough: [0-9]+ of [0-9]+ outcomes' target/k8s-walkthrough-output.log || true; } | tail -n 1)
kw_passed=0 kw_failed=0 kw_died=0
if [[ $kw_line =~ ^k8s-walkthrough:\ ([0-9]+)\ of\ ([0-9]+)\ outcomes.*\ ([0-9]+)\ misses ]]; then
  # Every miss is a failure (a wrong outcome, or a message or placement not as in the seed).
  kw_passed=${BASH_REMATCH[1]} kw_failed=${BASH_REMATCH[3]}
  ((kw_status == 0 || kw_failed > 0)) || kw_died=1
elif ((kw_status != 0)); then
  kw_died=1
fi
if ((kw_died)); then
  ./scripts/k8s-env.sh down || true
fi

summary() {
  echo
  echo "== summary"
  echo "cargo test: $tests_passed passed, $tests_failed failed, $tests_ignored ignored (counted as skipped)"
  echo "walkthrough: $(walk passed) passed, $(walk failed) failed, $(walk skipped) skipped; benchmark harness: ran"
  echo "kubernetes cluster (k8s-check): $(k8s passed) passed, $(($(k8s failed) + k8s_died)) failed, $(k8s skipped) skipped"
  echo "kubernetes walkthrough (k8s-walkthrough): $kw_passed passed, $((kw_failed + kw_died)) failed"
  echo "suite: $((tests_passed + $(walk passed) + 1 + $(k8s passed) + kw_passed)) passed," \
    "$((tests_failed + $(walk failed) + $(k8s failed) + k8s_died + kw_failed + kw_died)) failed," \
    "$((tests_ignored + $(walk skipped) + $(k8s skipped))) skipped"
}
if ((k8s_status != 0)); then
  summary
  grep -E '^FAILED: ' target/k8s-check-output.log >&2 || true
  phase_fail "scripts/k8s-check.sh exited with status $k8s_status: the failed checks are listed above; the whole output is target/k8s-check-output.log, the cluster's logs /var/lib/ironmesh-k8s/logs"
fi
if ((kw_status != 0)); then
  summary
  grep -E '^miss: ' target/k8s-walkthrough-output.log >&2 || true
  phase_fail "scripts/k8s-walkthrough.sh exited with status $kw_status: the misses are listed above; the whole output is target/k8s-walkthrough-output.log, the cluster's logs /var/lib/ironmesh-k8s/logs"
fi
phases_end
summary
