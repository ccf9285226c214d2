#!/usr/bin/env bash
# Installs the peer proxies and load tools the side-by-side benchmark compares against: the `bench` group of
# scripts/packages.txt (the one list of every package the project needs). No service is left running or
# enabled at boot (the harness runs every peer in the foreground with its own config, inside its own netns);
# apt's output goes to target/install-deps.log.
set -euo pipefail
cd "$(dirname "$0")/.."
exec ./scripts/install-deps.sh bench run
