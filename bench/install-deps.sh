#!/usr/bin/env bash
# Installs the peer proxies and load tools the side-by-side benchmark compares against.
# Called by CI before `bench/run --quick`. Debian packages only; no service is started
# (the harness runs every peer in the foreground with its own config, inside its own netns).
set -euo pipefail
packages=(nginx-light haproxy stunnel4 iperf3 wrk openssl iproute2 iptables procps util-linux fonts-dejavu-core)
missing=()
for package in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if ((${#missing[@]} == 0)); then
    echo "bench deps: all present"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101 keeps dpkg from starting nginx/haproxy as system services during install.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
fi
trap '((created_policy)) && rm -f "$policy"' EXIT
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
