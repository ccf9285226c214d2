#!/usr/bin/env bash
# Checks the README's promise on a fresh Debian 12: builds a minbase root with debootstrap, adds only a Rust
# toolchain (the host's rustup toolchain, copied) and the host's CA bundle (package registries are reached
# through it), copies the committed tree in, and runs the README's two commands exactly as written, as root,
# timing each. Not run by CI (it needs a network mirror and 30-45 minutes of CPU for a cold build).
#
#   scripts/fresh-machine-check.sh [WORK_DIR]     # default /var/tmp/ironmesh-fresh; needs root
#
# WORK_DIR/pristine is the untouched debootstrap result (kept, so a second run skips debootstrap);
# WORK_DIR/root is the copy the commands run in (removed at the end unless KEEP_ROOT=1);
# WORK_DIR/demo.log and WORK_DIR/test.log keep each command's whole output.
# PREPARE_ONLY=1 stops after the pristine root exists.
#
# Mounts live in a private mount namespace (unshare --mount), so they vanish with it even on failure. The
# root is bind-mounted onto itself and becomes / by pivot_root (a chroot is not enough: runc, pivoting into
# a container's root from inside a chroot, ends up on the host's / instead of the chroot's). The network
# namespace is the host's (crates.io and the Debian mirror must answer); the runtime only touches the
# namespaces it creates.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
work=${1:-/var/tmp/ironmesh-fresh}
suite=bookworm
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
toolchain=${RUST_TOOLCHAIN_DIR:-$(rustc --print sysroot 2>/dev/null || true)}

if [[ $(id -u) -ne 0 ]]; then
  echo "fresh-machine-check: run as root (debootstrap, chroot and mounts need it)" >&2
  exit 1
fi
if [[ -z $toolchain || ! -x $toolchain/bin/cargo ]]; then
  echo "fresh-machine-check: no Rust toolchain found (set RUST_TOOLCHAIN_DIR to a rustup toolchain directory)" >&2
  exit 1
fi
mkdir -p "$work"

if [[ ! -e $work/pristine/.complete ]]; then
  if ! command -v debootstrap >/dev/null; then
    echo "== installing debootstrap on the host"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >"$work/host-apt.log" 2>&1 ||
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >>"$work/host-apt.log" 2>&1; }
  fi
  echo "== debootstrap --variant=minbase $suite (log: $work/debootstrap.log)"
  rm -rf "$work/pristine"
  debootstrap --variant=minbase "$suite" "$work/pristine" "$mirror" >"$work/debootstrap.log" 2>&1 ||
    { tail -20 "$work/debootstrap.log" >&2; echo "fresh-machine-check: debootstrap failed" >&2; exit 1; }
  touch "$work/pristine/.complete"
fi
[[ ${PREPARE_ONLY:-0} == 1 ]] && { echo "pristine root ready: $work/pristine"; exit 0; }

root=$work/root
echo "== fresh copy of the minbase root: $root"
rm -rf "$root"
cp -a "$work/pristine" "$root"
rm -f "$root/.complete"
cleanup() { [[ ${KEEP_ROOT:-0} == 1 ]] || rm -rf "$root"; }
trap cleanup EXIT

# What the issue allows on top of minbase: a Rust toolchain and the machine's own CA bundle (plus name
# resolution). Nothing else: no compiler, no python3, no curl.
echo "== adding the Rust toolchain ($(basename "$toolchain")) and the host's CA bundle"
mkdir -p "$root/root/.rustup/toolchains" "$root/root/.cargo/bin"
cp -a "$toolchain" "$root/root/.rustup/toolchains/stable-x86_64-unknown-linux-gnu"
printf 'version = "12"\ndefault_toolchain = "stable-x86_64-unknown-linux-gnu"\nprofile = "default"\n' \
  >"$root/root/.rustup/settings.toml"
for tool in cargo rustc rustdoc rustfmt cargo-fmt cargo-clippy clippy-driver; do
  ln -sf "../../.rustup/toolchains/stable-x86_64-unknown-linux-gnu/bin/$tool" "$root/root/.cargo/bin/$tool"
done
mkdir -p "$root/etc/ssl"
cp -aL /etc/ssl/certs "$root/etc/ssl/"
if [[ -d /usr/local/share/ca-certificates ]]; then
  # Kept in place so that installing ca-certificates inside (update-ca-certificates) keeps them.
  mkdir -p "$root/usr/local/share"
  cp -a /usr/local/share/ca-certificates "$root/usr/local/share/"
fi
cp -L /etc/resolv.conf "$root/etc/resolv.conf"
# debootstrap writes no /etc/hosts; Debian's installer writes these two lines on every machine.
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"

echo "== copying the committed tree ($(git -C "$repo" rev-parse --short HEAD)) to /root/ironmesh"
mkdir -p "$root/root/ironmesh"
git -C "$repo" archive HEAD | tar -x -C "$root/root/ironmesh"
if [[ -d $repo/../shared/acceptance ]]; then
  # As in CI: the shared folder beside the checkout, so the acceptance script runs too.
  mkdir -p "$root/root/shared"
  cp -a "$repo/../shared/acceptance" "$root/root/shared/"
fi

# The README's commands, typed as written, from the checkout, as root, with only rustup's PATH added (as a
# login shell with rustup's env would have).
inside=$(
  cat <<'EOF'
set -uo pipefail
export HOME=/root PATH=/root/.cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
cd /root/ironmesh
status=0
for command in ./scripts/demo.sh ./scripts/test.sh; do
  name=$(basename "$command" .sh)
  start=$(date +%s)
  "$command" </dev/null >"/root/$name.log" 2>&1
  rc=$?
  echo "$name $rc $(($(date +%s) - start))" >>/root/times
  ((rc == 0)) || status=1
done
du -sh target target/debug target/release 2>/dev/null >/root/sizes
exit $status
EOF
)
echo "== running ./scripts/demo.sh then ./scripts/test.sh inside (logs: $work/demo.log, $work/test.log)"
set +e
unshare --mount --propagation private --fork bash -euc '
  root=$1; inside=$2
  mount --bind "$root" "$root"
  mount -t proc proc "$root/proc"
  mount --rbind /sys "$root/sys"
  mount --rbind /dev "$root/dev"
  mount -t tmpfs tmpfs "$root/run"
  mount -t tmpfs tmpfs "$root/tmp"
  # pivot_root, not a bare chroot: runc pivots into each container root, and from inside a chroot that
  # lands on the host'"'"'s real / (the pods then read the host'"'"'s /etc/hosts and cannot resolve a service).
  # After the switch the old root is detached, as on a machine booted from this root.
  cd "$root"
  mkdir -p .old-root
  pivot_root . .old-root
  umount -l /.old-root
  rmdir /.old-root
  exec chroot / /bin/bash -c "$inside"
' fresh "$root" "$inside"
status=$?
set -e
cp "$root/root/demo.log" "$work/demo.log" 2>/dev/null || true
cp "$root/root/test.log" "$work/test.log" 2>/dev/null || true

echo
echo "== results"
while read -r name rc seconds; do
  printf '%-5s exit %s, wall time %dm%02ds\n' "$name" "$rc" $((seconds / 60)) $((seconds % 60))
done <"$root/root/times"
# "Leave the machine as they found it": boot-time links the commands added (systemd's own units come with
# systemd when a bench package pulls it into a minimal root; daemons must not be among them).
boot_links() { (cd "$1" && ls -1d etc/rc[2-5].d/S* etc/systemd/system/*.wants/* 2>/dev/null | sort); }
echo "-- boot-time links added: $(comm -13 <(boot_links "$work/pristine") <(boot_links "$root") | tr '\n' ' ')"
echo "-- policy-rc.d left behind: $([[ -e $root/usr/sbin/policy-rc.d ]] && echo yes || echo no)"
echo "-- target/ after both: $(tr '\n\t' '; ' <"$root/root/sizes" 2>/dev/null)"
for name in demo test; do
  [[ -f $work/$name.log ]] || continue
  echo "-- $name.sh phase lines and last lines:"
  grep -E '^== |passed|FAILED|failed' "$work/$name.log" | grep -v '^test .* \.\.\. ok$' | tail -40
done
exit $status
