#!/usr/bin/env bash
# The seed's mutual TLS walkthrough (docs/WALKTHROUGH.md) with real kubectl on the real test cluster of
# scripts/k8s-env.sh: ironmesh installed with `ironmesh install`, then the seed's commands as the seed
# types them (`kubectl create ns foo`, `kubectl apply -f <(ironmesh kube-inject -f
# samples/httpbin/httpbin.yaml) -n foo`, `kubectl apply -f samples/httpbin/httpbin.yaml -n legacy`,
# `kubectl get meshpolicies.authentication.istio.io`, `kubectl apply -f default-mesh-policy.yml`,
# `kubectl exec $(kubectl get pod -l app=sleep -n foo -o jsonpath={.items..metadata.name}) -c sleep -n
# foo -- curl ...`), checking the 27 outcomes of the seed (200; 503 `upstream connect error or
# disconnect/reset before headers` for sidecar clients in plain text under the STRICT MeshPolicy; curl
# exit 56 for legacy clients; 200 again with the ISTIO_MUTUAL DestinationRule; legacy still refused),
# the messages kubectl prints, and that the pods run on both nodes (the default scheduler spreads them).
#
# Two passes: `kube-inject` (the seed's) and `label` (`kubectl label namespace foo
# istio-injection=enabled` and the plain samples: the mutating webhook injects).
#   scripts/k8s-walkthrough.sh [--keep] [--pass kube-inject|label|both]   # default: both
# The control plane runs in the cluster, as users run it: `ironmesh install` applies its Deployment
# (the imported docker.io/ironmesh/control-plane:<version> image), its webhooks and the extensions/v1beta1
# API through the Services istiod and ironmesh-extensions.
# Environment: IRONMESH_BIN_DIR (ironmesh, ironmesh-control-plane, and for the images ironmesh-proxy and
# ironmesh-httpbin; default target/release).
# Last line: `k8s-walkthrough: N of M outcomes as in the seed (...), K misses (S s)`; exit 1 on any miss.
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
keep=0 passes=(kube-inject label)
while (($#)); do
  case $1 in
    --keep) keep=1 ;;
    --pass)
      case ${2:-} in
        kube-inject | label) passes=("$2") ;;
        both) passes=(kube-inject label) ;;
        *) echo "k8s-walkthrough: --pass takes kube-inject, label or both" >&2; exit 2 ;;
      esac
      shift ;;
    *) echo "usage: scripts/k8s-walkthrough.sh [--keep] [--pass kube-inject|label|both]" >&2; exit 2 ;;
  esac
  shift
done

NODES=(imk8s-node1 imk8s-node2)
state=${IRONMESH_K8S_STATE:-/var/lib/ironmesh-k8s}

die() { echo "k8s-walkthrough: $*" >&2; exit 1; }
bin_dir=$(realpath -m "${IRONMESH_BIN_DIR:-target/release}")
for b in ironmesh ironmesh-control-plane ironmesh-proxy ironmesh-httpbin; do
  [[ -x $bin_dir/$b ]] || die "$bin_dir/$b is missing: cargo build --release --workspace (or set IRONMESH_BIN_DIR)"
done
# scripts/k8s-env.sh up builds the nodes' images from these binaries (images/build.sh).
export IRONMESH_BIN_DIR=$bin_dir

started=$SECONDS
work=$(mktemp -d -t ironmesh-k8s-walkthrough.XXXXXX)
kubeconfig="" upped=0
cleanup() {
  if ((keep)); then
    echo "k8s-walkthrough: cluster left up (--keep); KUBECONFIG=$kubeconfig"
  elif ((upped)); then
    # From the repository: the walkthrough itself runs in $work.
    local out status
    # A cluster left up is a failure: the next user's up or the real-apiserver tests would meet it.
    out=$("$repo/scripts/k8s-env.sh" down 2>&1) || {
      status=$?
      tail -n 5 <<<"$out" >&2
      echo "k8s-walkthrough: scripts/k8s-env.sh down failed with status $status (its last lines above)" >&2
      rm -rf "$work"
      exit 1
    }
  fi
  rm -rf "$work"
}
trap cleanup EXIT

upped=1
kubeconfig=$(scripts/k8s-env.sh up | tail -n 1) && [[ -f $kubeconfig ]] || die "scripts/k8s-env.sh up failed"
k8s_bin=$(scripts/k8s-build.sh) || die "scripts/k8s-build.sh failed"
# The seed's commands say `kubectl` and `ironmesh`: those on PATH are the cluster's and ours.
export KUBECONFIG=$kubeconfig PATH="$bin_dir:$k8s_bin:$PATH"
export IRONMESH_HOME=$work/home
# The seed runs from a folder with samples/ and its two policy files.
ln -s "$repo/samples" "$work/samples"
cp "$repo/samples/default-mesh-policy.yml" "$repo/samples/all-internal-traffic.yml" "$work/"

node_images=$(kubectl get nodes -o 'jsonpath={.items[*].status.images[*].names}')
for image in ironmesh/control-plane ironmesh/proxy citizenstig/httpbin pstauffer/curl; do
  [[ $node_images == *"$image"* ]] || die "the nodes have no $image image (images/build.sh, run by scripts/k8s-env.sh up from IRONMESH_BIN_DIR)"
done

# The control plane's log, kept with the cluster's when something went wrong.
save_control_plane_log() {
  kubectl logs -n istio-system deployment/istiod --tail=-1 >"$state/logs/walkthrough-control-plane.log" 2>&1 &&
    echo "k8s-walkthrough: the control plane's log is $state/logs/walkthrough-control-plane.log"
}
ironmesh install --kubeconfig "$KUBECONFIG" >"$work/install.log" 2>&1 || { cat "$work/install.log"; die "ironmesh install failed"; }
kubectl rollout status -n istio-system deployment/istiod --timeout=120s >/dev/null || {
  kubectl get pods -n istio-system -o wide
  save_control_plane_log
  die "the control plane's Deployment istio-system/istiod did not roll out within 120 s"
}
available() { [[ $(kubectl get apiservice v1beta1.extensions -o 'jsonpath={.status.conditions[?(@.type=="Available")].status}' 2>/dev/null) == True ]]; }
for _ in $(seq 1 120); do available && break; sleep 0.5; done
available || {
  kubectl get apiservice v1beta1.extensions -o 'jsonpath={.status.conditions}'
  save_control_plane_log
  die "APIService v1beta1.extensions not Available 60 s after the control plane rolled out"
}
echo "k8s-walkthrough: ironmesh installed, control plane up in the cluster ($((SECONDS - started)) s)"

cd "$work" || die "cannot enter $work"
pass=0 total=0 misses=()
miss() { misses+=("$*"); echo "miss: $*"; }
says() { # what output wanted...: every wanted text in the output
  local what=$1 out=$2 w
  shift 2
  for w in "$@"; do [[ $out == *"$w"* ]] || { miss "$what said: $out (wanted: $w)"; return 1; }; done
}

# call SRC DST -> HTTPCODE/EXIT, e.g. 200/0, 503/0, 000/56 (the seed's command, with curl told to print
# only the code); $work/err keeps what curl and kubectl said on stderr.
call() {
  local out rc
  out=$(kubectl exec "$(kubectl get pod -l app=sleep -n "$1" -o jsonpath={.items..metadata.name})" -c sleep -n "$1" -- \
    curl "http://httpbin.$2:8000/ip" -s -S -o /dev/null -m 5 -w "%{http_code}" 2>"$work/err")
  rc=$?
  echo "${out:-none}/$rc"
}
body() { # SRC DST: the response body
  kubectl exec "$(kubectl get pod -l app=sleep -n "$1" -o jsonpath={.items..metadata.name})" -c sleep -n "$1" -- \
    curl "http://httpbin.$2:8000/ip" -s -m 5 2>/dev/null
}
expect() { # phase src dst want
  local got
  got=$(call "$2" "$3")
  total=$((total + 1))
  if [[ $got == "$4" ]]; then pass=$((pass + 1)); else miss "$PASS/$1: sleep.$2 -> httpbin.$3 want $4 got $got $(head -c 200 "$work/err")"; fi
}
wait_ready() { # every sleep reaches every httpbin, at most $1 seconds
  local deadline=$((SECONDS + $1)) s d ok
  while ((SECONDS < deadline)); do
    ok=1
    for s in foo bar legacy; do for d in foo bar legacy; do
      [[ $(call "$s" "$d") == 200/0 ]] || { ok=0; break 2; }
    done; done
    ((ok)) && return 0
    sleep 2
  done
  return 1
}

provision() {
  local out
  if [[ $PASS == kube-inject ]]; then
    out=$(kubectl create ns foo 2>&1)
    says "kubectl create ns foo" "$out" "namespace/foo created"
    out=$(kubectl apply -f <(ironmesh kube-inject -f samples/httpbin/httpbin.yaml) -n foo 2>&1)
    says "kubectl apply -f <(ironmesh kube-inject -f samples/httpbin/httpbin.yaml) -n foo" "$out" "service/httpbin created" "deployment.extensions/httpbin created"
    out=$(kubectl apply -f <(ironmesh kube-inject -f samples/sleep/sleep.yaml) -n foo 2>&1)
    says "kubectl apply -f <(ironmesh kube-inject -f samples/sleep/sleep.yaml) -n foo" "$out" "service/sleep created" "deployment.extensions/sleep created"
    out=$(kubectl create ns bar 2>&1)
    says "kubectl create ns bar" "$out" "namespace/bar created"
    out=$(kubectl apply -f <(ironmesh kube-inject -f samples/httpbin/httpbin.yaml) -n bar 2>&1)
    says "kubectl apply -f <(ironmesh kube-inject -f samples/httpbin/httpbin.yaml) -n bar" "$out" "service/httpbin created" "deployment.extensions/httpbin created"
    out=$(kubectl apply -f <(ironmesh kube-inject -f samples/sleep/sleep.yaml) -n bar 2>&1)
    says "kubectl apply -f <(ironmesh kube-inject -f samples/sleep/sleep.yaml) -n bar" "$out" "service/sleep created" "deployment.extensions/sleep created"
  else
    local ns
    for ns in foo bar; do
      out=$(kubectl create ns $ns 2>&1)
      says "kubectl create ns $ns" "$out" "namespace/$ns created"
      out=$(kubectl label namespace $ns istio-injection=enabled 2>&1)
      says "kubectl label namespace $ns istio-injection=enabled" "$out" "namespace/$ns labeled"
      out=$(kubectl apply -f samples/httpbin/httpbin.yaml -n $ns 2>&1)
      says "kubectl apply -f samples/httpbin/httpbin.yaml -n $ns" "$out" "service/httpbin created" "deployment.extensions/httpbin created"
      out=$(kubectl apply -f samples/sleep/sleep.yaml -n $ns 2>&1)
      says "kubectl apply -f samples/sleep/sleep.yaml -n $ns" "$out" "service/sleep created" "deployment.extensions/sleep created"
    done
  fi
  out=$(kubectl create ns legacy 2>&1)
  says "kubectl create ns legacy" "$out" "namespace/legacy created"
  out=$(kubectl apply -f samples/httpbin/httpbin.yaml -n legacy 2>&1)
  says "kubectl apply -f samples/httpbin/httpbin.yaml -n legacy" "$out" "service/httpbin created" "deployment.extensions/httpbin created"
  out=$(kubectl apply -f samples/sleep/sleep.yaml -n legacy 2>&1)
  says "kubectl apply -f samples/sleep/sleep.yaml -n legacy" "$out" "service/sleep created" "deployment.extensions/sleep created"
}

# The pods on both nodes, and the seed's calls across them: the default scheduler spreads a
# Deployment's pods and balances the nodes (each pod without requests counts as 100m CPU and 200 MB
# when scoring), so the six pods land three and three; asserted, never pinned (the samples stay as
# they are).
spread() {
  local placement nodes cross=0 s d sn dn
  placement=$(kubectl get pods -A -l 'app in (httpbin,sleep)' \
    -o jsonpath='{range .items[*]}{.metadata.namespace}/{.metadata.labels.app} {.spec.nodeName}{"\n"}{end}')
  echo "placement ($PASS):"
  sed 's/^/  /' <<<"$placement"
  nodes=$(awk '{print $2}' <<<"$placement" | sort -u | grep -c .)
  for s in foo bar legacy; do for d in foo bar legacy; do
    sn=$(awk -v p="$s/sleep" '$1 == p {print $2}' <<<"$placement")
    dn=$(awk -v p="$d/httpbin" '$1 == p {print $2}' <<<"$placement")
    [[ $sn != "$dn" ]] && cross=$((cross + 1))
  done; done
  echo "  $cross of the 9 calls cross nodes"
  ((nodes == ${#NODES[@]})) || { miss "$PASS: the pods run on $nodes node(s), not on both"; return; }
  ((cross > 0)) || miss "$PASS: no call crosses nodes"
}

walkthrough() {
  local out s d p names
  echo "== pass: $PASS"
  provision
  # Our wait, not the seed's: the pods' rollout (the seed waits by hand).
  for ns in foo bar legacy; do
    kubectl wait --for=condition=Available deployments.apps --all -n $ns --timeout=180s >/dev/null ||
      miss "$PASS: the Deployments of $ns not Available within 180 s: $(kubectl get pods -n $ns -o wide 2>&1 | tail -n +2 | tr '\n' ';')"
  done
  spread
  p=$(kubectl get pod -l app=sleep -n bar -o jsonpath={.items..metadata.name})
  names=$(kubectl get pods "$p" -n bar -o jsonpath='{.spec.containers[*].name}')
  [[ $names == "sleep ironmesh-proxy" ]] || miss "$PASS: containers of $p in bar: $names"
  names=$(kubectl get pods "$(kubectl get pod -l app=sleep -n legacy -o jsonpath={.items..metadata.name})" -n legacy -o jsonpath='{.spec.containers[*].name}')
  [[ $names == "sleep" ]] || miss "$PASS: containers of sleep in legacy: $names"
  out=$(kubectl get services httpbin -o wide -n foo 2>&1)
  says "kubectl get services httpbin -o wide -n foo" "$out" "8000/TCP" "app=httpbin"

  wait_ready 180 || miss "$PASS: not every sleep reached every httpbin within 180 s with no policy"
  for s in foo bar legacy; do for d in foo bar legacy; do expect open "$s" "$d" 200/0; done; done
  out=$(body bar foo)
  [[ $out == *'"origin"'* ]] || miss "$PASS: httpbin.foo's body from sleep.bar: $out"

  out=$(kubectl get policies.authentication.istio.io --all-namespaces 2>&1)
  says "kubectl get policies.authentication.istio.io --all-namespaces" "$out" "No resources found"
  out=$(kubectl get meshpolicies.authentication.istio.io 2>&1)
  grep -q '^default' <<<"$out" || miss "$PASS: kubectl get meshpolicies.authentication.istio.io: no default: $out"
  out=$(kubectl apply -f default-mesh-policy.yml 2>&1)
  says "kubectl apply -f default-mesh-policy.yml" "$out" "meshpolicy.authentication.istio.io/default configured"
  sleep 3
  for s in foo bar; do for d in foo bar; do expect strict "$s" "$d" 503/0; done; done
  for s in foo bar; do expect strict "$s" legacy 200/0; done
  for d in foo bar; do expect strict legacy "$d" 000/56; done
  expect strict legacy legacy 200/0
  out=$(body bar foo)
  says "curl http://httpbin.foo:8000 from sleep.bar under the STRICT MeshPolicy" "$out" "upstream connect error or disconnect/reset before headers"
  # stdout and stderr apart: kubectl copies the container's two streams concurrently, so one capture of
  # both can interleave them mid-line ("c" "000" "url: (56)").
  out=$(kubectl exec "$(kubectl get pod -l app=sleep -n legacy -o jsonpath={.items..metadata.name})" -c sleep -n legacy -- curl http://httpbin.foo:8000 -w "%{http_code}\n" -s -S -m 5 2>"$work/err")
  [[ $out == 000 ]] || miss "$PASS: curl http://httpbin.foo:8000 from sleep.legacy printed $out on stdout (wanted: 000)"
  says "curl http://httpbin.foo:8000 from sleep.legacy" "$(cat "$work/err")" "curl: (56)" "command terminated with exit code 56"

  out=$(kubectl apply -f all-internal-traffic.yml 2>&1)
  says "kubectl apply -f all-internal-traffic.yml" "$out" "destinationrule.networking.istio.io/default created"
  sleep 3
  for s in foo bar; do for d in foo bar; do expect mutual "$s" "$d" 200/0; done; done
  for s in foo bar; do expect mutual "$s" legacy 503/0; done
  for d in foo bar; do expect mutual legacy "$d" 000/56; done
  expect mutual legacy legacy 200/0
}

# Between passes: the namespaces and the two policies go, the MeshPolicy back to the install's PERMISSIVE.
reset() {
  # The sleep containers ignore SIGTERM: without this each pod waits out its 30 s grace period.
  for ns in foo bar legacy; do
    kubectl delete pods --all -n "$ns" --grace-period=0 --force >/dev/null 2>&1
  done
  kubectl delete ns foo bar legacy --wait=true --timeout=120s >/dev/null 2>&1 ||
    miss "deleting the namespaces foo, bar and legacy did not finish within 120 s"
  kubectl delete destinationrules.networking.istio.io default -n default --ignore-not-found >/dev/null 2>&1
  kubectl apply -f - >/dev/null <<'Y'
apiVersion: authentication.istio.io/v1alpha1
kind: MeshPolicy
metadata:
  name: default
spec:
  peers:
  - mtls:
      mode: PERMISSIVE
Y
}

first=1 timings=()
for PASS in "${passes[@]}"; do
  pass_started=$SECONDS
  ((first)) || reset
  first=0
  walkthrough
  timings+=("$PASS $((SECONDS - pass_started)) s")
  echo "== pass $PASS took $((SECONDS - pass_started)) s"
done
((${#misses[@]} == 0)) || save_control_plane_log
IFS=, && echo "k8s-walkthrough: passes took ${timings[*]}" && unset IFS
echo "k8s-walkthrough: $pass of $total outcomes as in the seed (${passes[*]}), ${#misses[@]} misses ($((SECONDS - started)) s)"
((pass == total && ${#misses[@]} == 0))
