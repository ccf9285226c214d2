#!/usr/bin/env bash
# Installs the Debian packages of scripts/packages.txt for the groups given (default: build run), only those
# missing, quietly: apt's and dpkg's output goes to target/install-deps.log. The bench and k8s groups'
# packages (nginx, haproxy, stunnel, containerd...) and whatever they pull in are installed with their
# services neither started nor enabled at boot: the benchmark runs each peer in the foreground in its own
# network namespace, and scripts/k8s-env.sh runs one containerd per test node. Then checks for cargo.
#   scripts/install-deps.sh [build] [run] [test] [bench] [k8s]
set -euo pipefail
cd "$(dirname "$0")/.."
groups=("$@")
((${#groups[@]})) || groups=(build run)
log=target/install-deps.log

missing_of() { # group...: the packages of these groups that are not installed
  local package group g
  while read -r package group _; do
    [[ -z $package || $package == \#* ]] && continue
    for g in "$@"; do
      if [[ $g == "$group" ]] && ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        echo "$package"
      fi
    done
  done <scripts/packages.txt
}

installed() { dpkg-query -W -f='${Status} ${Package}\n' | awk '$3 == "installed" { print $4 }' | sort; }

# Postinst scripts enable their units at boot even when policy-rc.d forbids starting them: undo that for
# the daemons among the packages given (a service the machine had before is left as it was). A daemon
# package ships an init script; that leaves out an init system pulled in as a dependency (systemd on a
# minimal root), whose own units must stay as they are.
disable_services() {
  local package unit script
  for package in "$@"; do
    dpkg-query -L "$package" 2>/dev/null | grep -qE '^/etc/init\.d/[^/]+$' || continue
    for unit in $(dpkg-query -L "$package" 2>/dev/null | grep -E '^/(lib|usr/lib)/systemd/system/[^/@]+\.(service|socket|timer|target)$' | xargs -r -n1 basename); do
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
}

updated=0
apt_install() { # package...
  export DEBIAN_FRONTEND=noninteractive
  if ((updated == 0)); then
    apt-get update -q >>"$log" 2>&1 || { tail -n 20 "$log" >&2; echo "install-deps: apt-get update failed; the whole log is $log" >&2; exit 1; }
    updated=1
  fi
  if ! apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1; then
    tail -n 20 "$log" >&2
    echo "install-deps: apt-get failed installing $*; the whole log is $log" >&2
    exit 1
  fi
}

# The bench and k8s groups bring daemons (nginx, haproxy, containerd) that must not run as services: their
# packages are installed apart, and every unit they bring is disabled.
base=() daemons=()
for g in "${groups[@]}"; do if [[ $g == bench || $g == k8s ]]; then daemons+=("$g"); else base+=("$g"); fi; done
mapfile -t missing_base < <(((${#base[@]})) && missing_of "${base[@]}")
mapfile -t missing_daemons < <(((${#daemons[@]})) && missing_of "${daemons[@]}")
if ((${#missing_base[@]} + ${#missing_daemons[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: run as root to install: ${missing_base[*]} ${missing_daemons[*]}" >&2
    exit 1
  fi
  mkdir -p target
  echo "install-deps: installing ${missing_base[*]} ${missing_daemons[*]} (apt log: $log; usually under a minute)"
  # policy-rc.d exit 101 forbids starting services during the install (Debian's invoke-rc.d contract).
  policy=/usr/sbin/policy-rc.d
  created_policy=0
  if [[ ! -e $policy ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    created_policy=1
  fi
  trap 'if ((created_policy)); then rm -f "$policy"; fi' EXIT
  ((${#missing_base[@]} == 0)) || apt_install "${missing_base[@]}"
  if ((${#missing_daemons[@]})); then
    before=$(installed)
    apt_install "${missing_daemons[@]}"
    # Dependencies included: nginx's unit and init script come with nginx-common, not nginx-light.
    mapfile -t new_packages < <(comm -13 <(echo "$before") <(installed))
    disable_services "${new_packages[@]}"
  fi
fi
export PATH="$HOME/.cargo/bin:$PATH"
if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo not found: install a Rust toolchain (1.90 or newer, with rustup) and run again" >&2
  exit 1
fi
echo "install-deps: ${groups[*]} packages present (scripts/packages.txt), cargo $(cargo --version | awk '{print $2}')"
