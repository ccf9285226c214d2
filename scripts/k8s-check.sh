#!/usr/bin/env bash
# Checks the real test cluster of scripts/k8s-env.sh end to end, with outcomes a user would see: both
# nodes Ready; a pod scheduled on each node runs; `kubectl logs` and `kubectl exec` (served by the
# kubelet) work; a pod reaches the pod of the other node; a Service's ClusterIP reaches a pod on the other
# node; then `down` leaves nothing behind (processes, network namespaces, links, routes, mounts, cgroups,
# host iptables rules). Also: the cluster DNS resolves Services, pods reach the apiserver through the
# `kubernetes` Service, the host and the apiserver's webhook calls reach pods, the seed's samples run from
# our images, `ironmesh install` runs the control plane in the cluster from its imported image, and a pod
# of `ironmesh kube-inject` starts its init and proxy containers from the imported sidecar image, its proxy
# getting its certificate (pod's service account) and configuration from that control plane over TLS.
# Brings the cluster up first if it is not.
#   scripts/k8s-check.sh [--keep]     # --keep: leave the cluster up (skips the teardown checks)
# Last line: `k8s-check: N passed, M failed, K skipped`; exit status 1 when any check failed.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[[ ${1:-} == --keep ]] && keep=1
state=${IRONMESH_K8S_STATE:-/var/lib/ironmesh-k8s}
NODES=(imk8s-node1 imk8s-node2)
NS=imk8s-check
passed=0 failed=0

pass() { echo "ok: $*"; passed=$((passed + 1)); }
fail() { echo "FAILED: $*"; failed=$((failed + 1)); }
check() { # description command...
  local what=$1 out
  shift
  if out=$("$@" 2>&1); then pass "$what"; else fail "$what: $(tail -n 5 <<<"$out")"; fi
}
finish() {
  echo "k8s-check: $passed passed, $failed failed, ${skipped:-0} skipped"
  ((failed == 0))
}

host_iptables() { iptables-save 2>/dev/null | { grep -vE '^#|^:' || true; } | sort; }
iptables_before=$(host_iptables)
# What the kubelet changes host-wide and `down` must put back.
tunables() { sysctl vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes | sed 's/ = /=/'; }
# A cluster already up has changed them: the machine's own values are the ones its `up` saved.
if [[ -f $state/sysctl.saved ]]; then tunables_before=$(cat "$state/sysctl.saved"); else tunables_before=$(tunables); fi

kubeconfig=$(scripts/k8s-env.sh up | tail -n 1)
bin=$(scripts/k8s-build.sh)
k() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

nodes_ready() {
  local node
  for node in "${NODES[@]}"; do
    [[ $(k get node "$node" -o 'jsonpath={.status.conditions[?(@.type=="Ready")].status}') == True ]] ||
      { echo "$node is not Ready"; return 1; }
  done
}
check "both nodes Ready (${NODES[*]})" nodes_ready

# One web server pod pinned to each node by the scheduler (nodeSelector), with a Service for the second.
k delete namespace "$NS" --ignore-not-found --wait=true >/dev/null
k create namespace "$NS" >/dev/null
for i in 1 2; do
  k apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: web$i
  labels: {app: web$i}
spec:
  nodeSelector: {kubernetes.io/hostname: imk8s-node$i}
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: docker.io/library/busybox:1.35.0
    env:
    - name: NODE
      valueFrom: {fieldRef: {fieldPath: spec.nodeName}}
    command: ["sh", "-c", "mkdir -p /www && echo \$NODE >/www/index.html && echo web$i started on \$NODE && exec httpd -f -p 8080 -h /www"]
    ports: [{containerPort: 8080}]
    readinessProbe:
      tcpSocket: {port: 8080}
      periodSeconds: 1
EOF
done
k apply -n "$NS" -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: web2}
spec:
  selector: {app: web2}
  ports: [{port: 80, targetPort: 8080}]
EOF

pods_run() {
  k wait -n "$NS" --for=condition=Ready pod/web1 pod/web2 --timeout=120s >/dev/null || {
    k get pods -n "$NS" -o wide
    k get events -n "$NS" --sort-by=.lastTimestamp | tail -n 10
    return 1
  }
  local i node
  for i in 1 2; do
    node=$(k get pod -n "$NS" "web$i" -o 'jsonpath={.spec.nodeName}')
    [[ $node == "imk8s-node$i" ]] || { echo "web$i runs on '$node', not imk8s-node$i"; return 1; }
  done
}
check "a pod scheduled on each node runs and is Ready" pods_run

logs_work() {
  local out
  out=$(k logs -n "$NS" web2)
  [[ $out == *"web2 started on imk8s-node2"* ]] || { echo "kubectl logs web2 said: $out"; return 1; }
}
check "kubectl logs (through the kubelet of imk8s-node2)" logs_work

exec_works() {
  local out
  out=$(k exec -n "$NS" web1 -- cat /www/index.html)
  [[ $out == imk8s-node1 ]] || { echo "kubectl exec web1 -- cat said: $out"; return 1; }
}
check "kubectl exec (through the kubelet of imk8s-node1)" exec_works

fetch_from() { # pod url expected: wget inside the pod, bounded
  local out
  # busybox's `timeout`, not wget's -T: Debian 12's static busybox wget crashes (SIGSEGV) with -T.
  out=$(k exec -n "$NS" "$1" -- timeout 5 wget -q -O - "$2" 2>&1) || { echo "wget $2 from $1 failed: $out"; return 1; }
  [[ $out == "$3" ]] || { echo "wget $2 from $1 got '$out', not '$3'"; return 1; }
}
ip1=$(k get pod -n "$NS" web1 -o 'jsonpath={.status.podIP}')
ip2=$(k get pod -n "$NS" web2 -o 'jsonpath={.status.podIP}')
check "pod to pod across nodes: web1 ($ip1) -> web2 ($ip2)" fetch_from web1 "http://$ip2:8080/" imk8s-node2
check "pod to pod across nodes: web2 ($ip2) -> web1 ($ip1)" fetch_from web2 "http://$ip1:8080/" imk8s-node1

service_works() {
  local vip
  vip=$(k get service -n "$NS" web2 -o 'jsonpath={.spec.clusterIP}')
  # The endpoints reach kube-proxy of the client's node a moment after the pod is Ready: a few tries.
  local i
  for i in $(seq 1 20); do
    fetch_from web1 "http://$vip/" imk8s-node2 >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  fetch_from web1 "http://$vip/" imk8s-node2
}
check "a Service's ClusterIP reaches the pod on the other node (web1 -> web2's ClusterIP, kube-proxy iptables)" service_works

# The cluster DNS (CoreDNS, kube-system/kube-dns): a Service's short name resolves through the pod's
# search path to its ClusterIP, and the request goes through.
dns_works() {
  local vip out
  vip=$(k get service -n "$NS" web2 -o 'jsonpath={.spec.clusterIP}')
  out=$(k exec -n "$NS" web1 -- nslookup "web2.$NS.svc.cluster.local" 2>&1) || { echo "$out"; return 1; }
  [[ $out == *"Address: $vip"* ]] || { echo "nslookup web2.$NS.svc.cluster.local said: $out"; return 1; }
  fetch_from web1 http://web2/ imk8s-node2
}
check "the cluster DNS: web2.$NS.svc.cluster.local is web2's ClusterIP, and http://web2/ answers from imk8s-node2" dns_works

# In-cluster clients (a control plane in a pod) reach the apiserver through the `kubernetes` Service.
apiserver_from_pod() {
  local vip
  vip=$(k get service -n default kubernetes -o 'jsonpath={.spec.clusterIP}')
  # Plain HTTP to a TLS port: Go's TLS server itself answers that it wants HTTPS. (busybox has no TLS
  # client; this proves the route, the relay and the listener.)
  local out
  out=$(k exec -n "$NS" web2 -- sh -c "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 5 nc $vip 443")
  [[ $out == *"Client sent an HTTP request to an HTTPS server"* ]] || { echo "$vip:443 answered: $out"; return 1; }
}
check "the kubernetes Service (the apiserver, through the relay) answers from a pod on imk8s-node2" apiserver_from_pod

# The apiserver calls webhooks at their pods' addresses (--enable-aggregator-routing): the host must
# route to each node's pods.
host_reaches_pods() {
  local out ip i
  for i in 1 2; do
    ip=$(k get pod -n "$NS" "web$i" -o 'jsonpath={.status.podIP}')
    out=$(curl -sS --max-time 5 "http://$ip:8080/") || return 1
    [[ $out == "imk8s-node$i" ]] || { echo "curl http://$ip:8080/ from the host got '$out'"; return 1; }
  done
}
check "the host (where the apiserver calls webhooks from) reaches the pods of both nodes" host_reaches_pods

# And the apiserver itself calls a webhook Service's pod: a validating webhook on web2 (plain HTTP, so
# the call fails, with the answer of web2's httpd as the proof it got there) guards ConfigMaps in one
# labelled namespace.
webhook_reaches_pod() {
  k apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingWebhookConfiguration
metadata: {name: imk8s-check-probe}
webhooks:
- name: probe.imk8s-check.test
  clientConfig:
    service: {namespace: $NS, name: web2, port: 80, path: /}
  rules: [{apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [configmaps]}]
  namespaceSelector: {matchLabels: {imk8s-check-probe: "yes"}}
  failurePolicy: Fail
  sideEffects: None
  admissionReviewVersions: [v1]
  timeoutSeconds: 5
EOF
  k label namespace "$NS" imk8s-check-probe=yes >/dev/null
  local out
  out=$(k create configmap -n "$NS" probe --from-literal=a=b 2>&1) || true
  k delete validatingwebhookconfiguration imk8s-check-probe >/dev/null
  [[ $out == *'failed calling webhook "probe.imk8s-check.test"'*"server gave HTTP response to HTTPS client"* ]] ||
    { echo "creating a ConfigMap under the webhook said: $out"; return 1; }
}
check "the apiserver calls a webhook Service's pod on another node (endpoint routing)" webhook_reaches_pod

# The seed's samples, applied unchanged (their apps/v1 manifests), from the images images/build.sh makes
# of our ironmesh-httpbin and Debian's curl: skipped when those binaries were not built.
skipped=0
node_images=$(k get nodes -o 'jsonpath={.items[*].status.images[*].names}')
if [[ $node_images == *citizenstig/httpbin* && $node_images == *pstauffer/curl* ]]; then
  samples_work() {
    k apply -n "$NS" -f samples/httpbin/httpbin-apps-v1.yaml -f samples/sleep/sleep-apps-v1.yaml >/dev/null
    k wait -n "$NS" --for=condition=Available deployment/httpbin deployment/sleep --timeout=120s >/dev/null ||
      { k get pods -n "$NS" -o wide; return 1; }
    local vip sleep_pod out
    vip=$(k get service -n "$NS" httpbin -o 'jsonpath={.spec.clusterIP}')
    sleep_pod=$(k get pod -l app=sleep -n "$NS" -o 'jsonpath={.items..metadata.name}')
    # As above, the new Service reaches kube-proxy a moment after the pods are Ready: a few tries.
    for _ in $(seq 1 20); do
      # The walkthrough's spelling: httpbin.<namespace>:8000, through the cluster DNS.
      out=$(k exec -n "$NS" "$sleep_pod" -c sleep -- curl -sS --max-time 5 "http://httpbin.$NS:8000/ip" -w ' %{http_code}' 2>&1) || true
      [[ $out == *'"origin"'*' 200' ]] && return 0
      sleep 0.5
    done
    echo "curl http://httpbin.$NS:8000/ip ($vip) from $sleep_pod: $out"
    return 1
  }
  check "the seed's httpbin and sleep samples run from our images; sleep's curl gets 200 from http://httpbin.$NS:8000/ip" samples_work
else
  echo "skipped: the samples (no httpbin image imported: build ironmesh-httpbin, or set IRONMESH_BIN_DIR)"
  skipped=1
fi

# The control plane in the cluster: `ironmesh install` applies its Deployment, which runs from the imported
# ironmesh/control-plane image with the pod's service account (skipped without the CLI or that image).
# Then `ironmesh kube-inject`'s pods start: their init and proxy containers name the release's image, which
# the nodes imported (images/build.sh), and take it without pulling; the init container's iptables rules
# apply in the pod. With the control plane, the proxy authenticates with the pod's projected token over TLS
# to istiod:15012 (its root from the namespace's istio-ca-root-cert) and gets its certificate, for the
# pod's service account, and its configuration (Ready).
cli=$(realpath -m "${IRONMESH_BIN_DIR:-target/release}")/ironmesh
control_plane=0
if [[ -x $cli && $node_images == *ironmesh/control-plane* ]]; then
  control_plane_runs() {
    local out
    out=$("$cli" install --kubeconfig "$kubeconfig" 2>&1) || { echo "ironmesh install: $out"; return 1; }
    k -n istio-system rollout status deployment/istiod --timeout=120s >/dev/null && return 0
    k -n istio-system get pods -o wide
    k -n istio-system logs deployment/istiod --tail=20 2>&1
    return 1
  }
  check "ironmesh install: the control plane's Deployment runs in the cluster from the imported ironmesh/control-plane image" control_plane_runs &&
    control_plane=1
else
  echo "skipped: the control plane in the cluster (needs $cli and the ironmesh/control-plane image: cargo build --release, or set IRONMESH_BIN_DIR)"
  skipped=$((skipped + 1))
fi
if [[ -x $cli && $node_images == *ironmesh/proxy* ]]; then
  injected_pod_starts() {
    local manifest out init_exit="" proxy_image proxy_image_id=""
    manifest=$(mktemp)
    cat >"$manifest" <<EOF
apiVersion: v1
kind: Pod
metadata: {name: injected, labels: {app: injected}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: docker.io/library/busybox:1.35.0
    command: ["sleep", "3600"]
EOF
    out=$("$cli" kube-inject -f "$manifest" 2>&1) || { rm -f "$manifest"; echo "ironmesh kube-inject: $out"; return 1; }
    rm -f "$manifest"
    # The proxy mounts the namespace's mesh root, which the control plane writes; without one, an empty root.
    ((control_plane)) ||
      k create configmap -n "$NS" istio-ca-root-cert --from-literal=root-cert.pem= >/dev/null
    k apply -n "$NS" -f - <<<"$out" >/dev/null
    for _ in $(seq 1 120); do
      init_exit=$(k get pod -n "$NS" injected -o 'jsonpath={.status.initContainerStatuses[?(@.name=="ironmesh-init")].state.terminated.exitCode}')
      proxy_image_id=$(k get pod -n "$NS" injected -o 'jsonpath={.status.containerStatuses[?(@.name=="ironmesh-proxy")].imageID}')
      [[ $init_exit == 0 && -n $proxy_image_id ]] && return 0
      sleep 0.5
    done
    proxy_image=$(k get pod -n "$NS" injected -o 'jsonpath={.spec.containers[?(@.name=="ironmesh-proxy")].image}')
    echo "ironmesh-init exit code '$init_exit', ironmesh-proxy ($proxy_image) image id '$proxy_image_id'"
    k get pod -n "$NS" injected -o 'jsonpath={.status.initContainerStatuses}{"\n"}{.status.containerStatuses}{"\n"}'
    k get events -n "$NS" --field-selector involvedObject.name=injected | tail -n 5
    return 1
  }
  check "a pod from ironmesh kube-inject starts: ironmesh-init applies its rules, ironmesh-proxy is created from the imported image" injected_pod_starts
  if ((control_plane)); then
    proxy_gets_identity() {
      local certs spiffe="spiffe://cluster.local/ns/$NS/sa/default"
      k wait -n "$NS" --for=condition=Ready pod/injected --timeout=120s >/dev/null || {
        k logs -n "$NS" injected -c ironmesh-proxy --tail=20 2>&1
        k -n istio-system logs deployment/istiod --tail=20 2>&1
        return 1
      }
      certs=$(k exec -n "$NS" injected -c ironmesh-proxy -- wget -qO- http://127.0.0.1:15000/certs 2>&1) || true
      [[ $certs == *"$spiffe"* ]] && return 0
      echo "the proxy's /certs does not name $spiffe: $certs"
      return 1
    }
    check "the injected pod's proxy authenticates with its projected token over TLS to istiod:15012 and gets its certificate ($NS/sa/default) and configuration (Ready)" proxy_gets_identity
  fi
else
  echo "skipped: the kube-injected pod (needs $cli and the ironmesh/proxy image: cargo build --release, or set IRONMESH_BIN_DIR)"
  skipped=$((skipped + 1))
fi

k delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
if ((keep)); then
  echo "k8s-check: cluster left up (--keep); kubeconfig: $kubeconfig"
  finish
  exit
fi

scripts/k8s-env.sh down
leftovers() {
  local found=""
  pgrep -af -- "$state" >/dev/null && found+=" processes: $(pgrep -af -- "$state" | cut -c1-120);"
  pgrep -af -- "$bin" >/dev/null && found+=" processes: $(pgrep -af -- "$bin" | cut -c1-120);"
  ip netns list | grep -q '^imk8s-' && found+=" netns: $(ip netns list | grep '^imk8s-' | tr '\n' ' ');"
  ip -o link show | grep -q 'imk8s' && found+=" links: $(ip -o link show | grep -o 'imk8s[^:@]*' | tr '\n' ' ');"
  ip route show | grep -qE '^198\.18\.(12[89]|1[3-9][0-9]|2[0-9][0-9])\.|^198\.18\.127\.' && found+=" routes: $(ip route show | grep '^198\.18\.');"
  grep -q " $state/" /proc/self/mounts && found+=" mounts: $(grep -c " $state/" /proc/self/mounts);"
  compgen -G "/sys/fs/cgroup/*/imk8s-*" >/dev/null && found+=" cgroups: $(compgen -G "/sys/fs/cgroup/*/imk8s-*" | head -n 3 | tr '\n' ' ');"
  [[ $(host_iptables) == "$iptables_before" ]] || found+=" host iptables changed: $(diff <(echo "$iptables_before") <(host_iptables) | head -n 5);"
  [[ $(tunables) == "$tunables_before" ]] || found+=" kernel tunables changed: $(diff <(echo "$tunables_before") <(tunables) | grep '^>' | tr '\n' ' ');"
  find /var/log/containers -maxdepth 1 -lname "$state/*" 2>/dev/null | grep -q . && found+=" links in /var/log/containers;"
  [[ -z $found ]] || { echo "left behind:$found"; return 1; }
}
check "down leaves nothing behind (processes, netns, links, routes, mounts, cgroups, host iptables, kernel tunables, log links)" leftovers
finish
