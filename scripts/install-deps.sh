#!/usr/bin/env bash
# Installs the Debian packages of scripts/packages.txt for the groups given (default: build run), only those
# missing, quietly: apt's and dpkg's output goes to target/install-deps.log. Packages that bring a system
# service (nginx, haproxy, stunnel) are installed with services neither started nor enabled at boot: the
# benchmark runs each peer in the foreground in its own network namespace. Then checks for cargo.
#   scripts/install-deps.sh [build] [run] [test] [bench]
set -euo pipefail
cd "$(dirname "$0")/.."
groups=("$@")
((${#groups[@]})) || groups=(build run)
wanted=()
while read -r package group _; do
  [[ -z $package || $package == \#* ]] && continue
  for g in "${groups[@]}"; do [[ $g == "$group" ]] && wanted+=("$package"); done
done <scripts/packages.txt
missing=()
for package in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
log=target/install-deps.log
if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then echo "install-deps: run as root to install: ${missing[*]}" >&2; exit 1; fi
  mkdir -p target
  echo "install-deps: installing ${missing[*]} (apt log: $log; usually under a minute)"
  export DEBIAN_FRONTEND=noninteractive
  # policy-rc.d exit 101 forbids starting services during the install (Debian's invoke-rc.d contract).
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  trap '((created_policy)) && rm -f "$policy"' EXIT
  if ! { apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"; } >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "install-deps: apt-get failed installing ${missing[*]}; the whole log is $log" >&2
    exit 1
  fi
  # Postinst scripts enable their units at boot even when policy-rc.d forbids starting them: undo that for
  # what this run installed (a service the machine had before is left as it was).
  for package in "${missing[@]}"; do
    for unit in $(dpkg-query -L "$package" 2>/dev/null | grep -E '^/(lib|usr/lib)/systemd/system/[^/@]+\.service$' | xargs -r -n1 basename); do
      if command -v systemctl >/dev/null 2>&1; then
        systemctl disable "$unit" >>"$log" 2>&1 || true
        if [[ -d /run/systemd/system ]]; then systemctl stop "$unit" >>"$log" 2>&1 || true; fi
      elif command -v deb-systemd-helper >/dev/null 2>&1; then
        deb-systemd-helper disable "$unit" >>"$log" 2>&1 || true
      fi
    done
    for script in $(dpkg-query -L "$package" 2>/dev/null | grep -E '^/etc/init\.d/[^/]+$' | xargs -r -n1 basename); do
      update-rc.d "$script" disable >>"$log" 2>&1 || true
    done
  done
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found: install a Rust toolchain (1.90 or newer, with rustup) and run again" >&2
  exit 1
fi
echo "install-deps: ${groups[*]} packages present (scripts/packages.txt), cargo $(cargo --version | awk '{print $2}')"
