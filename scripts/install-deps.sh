#!/usr/bin/env bash
# Installs the Debian packages ironmesh needs at run time and in tests: network namespaces and links
# (iproute2), NAT and interception rules (iptables), the walkthrough's client (curl), certificate checks
# (openssl), process tools (procps). Checks that a Rust toolchain is there.
set -euo pipefail
need=()
for pair in ip:iproute2 iptables:iptables curl:curl openssl:openssl pgrep:procps runc:runc nsenter:util-linux; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || need+=("${pair#*:}")
done
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then echo "install-deps: run as root to install: ${need[*]}" >&2; exit 1; fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found: install a Rust toolchain (1.90 or newer, with rustup) and run again" >&2
  exit 1
fi
echo "install-deps: iproute2, iptables, curl, openssl and cargo are present"
