#!/usr/bin/env bash
# A real Kubernetes cluster on this machine for the Kubernetes-mode tests (docs/KUBERNETES.md): etcd,
# kube-apiserver, kube-controller-manager and kube-scheduler on the host's loopback, and two nodes, each a
# network namespace with its own containerd (runc, CNI bridge + host-local), kubelet and kube-proxy
# (iptables), joined by a host bridge, with routed pod CIDRs. Components come from scripts/k8s-build.sh,
# images from images/build.sh (imported, never pulled: no registry is reachable).
#   scripts/k8s-env.sh up [--control-plane-only]   # prints the admin kubeconfig's path last
#   scripts/k8s-env.sh down                        # stops and removes everything up made (logs stay)
#   scripts/k8s-env.sh status
# Environment: IRONMESH_K8S_STATE (default /var/lib/ironmesh-k8s, outside $IRONMESH_HOME: the local
# runtime owns that): certificates, data, logs, kubeconfigs.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
state=${IRONMESH_K8S_STATE:-/var/lib/ironmesh-k8s}
pki=$state/pki
logs=$state/logs
pids=$state/pids
admin_kubeconfig=$state/admin.kubeconfig

# Addresses. Nothing here leaves the machine: the host bridge has no uplink and the nodes' default route
# is the host, which does not forward (net.ipv4.ip_forward stays as it is).
ETCD_CLIENT=127.0.0.1:12379
ETCD_PEER=127.0.0.1:12380
APISERVER_PORT=16443
CONTROLLER_MANAGER_PORT=16257
SCHEDULER_PORT=16259
HOST_BRIDGE=imk8s0           # the local runtime's names start with im- and v<hex>: no collision
HOST_IP=198.18.127.1         # the host on the node network; the apiserver's advertised address
NODE_NET_PREFIX=24
CLUSTER_CIDR=198.18.128.0/17 # pods; the controller-manager gives each node a /24 of it
SERVICE_CIDR=198.19.0.0/16
KUBERNETES_SERVICE_IP=198.19.0.1
DNS_SERVICE_IP=198.19.0.10   # the kube-dns Service (CoreDNS), as kubeadm numbers it
NODES=(imk8s-node1 imk8s-node2)
node_ip() { echo "198.18.127.$((10 + ${1#imk8s-node}))"; }
node_veth() { echo "imk8s-n${1#imk8s-node}"; }
SANDBOX_IMAGE=registry.k8s.io/pause:3.10.1 # images/build.sh builds it under this name
# The relay that gives the apiserver HOST_IP (one per machine too: it names no state dir).
RELAY_ARGS=("TCP-LISTEN:$APISERVER_PORT,bind=$HOST_IP,fork,reuseaddr" "TCP:127.0.0.1:$APISERVER_PORT")
# The names, addresses and ports above are one per machine, whatever the state dir: the state dir of the
# cluster that holds them is written here, so a second `up` (another state dir) is refused instead of
# mixing with it, and a `down` of another state dir leaves them alone. LOCK serializes up and down.
OWNER=/run/ironmesh-k8s.owner
LOCK=/run/ironmesh-k8s.lock

log() { echo "k8s-env: [${SECONDS}s] $*" >&2; }
die() { log "$*"; exit 1; }
kubectl_admin() { "$bin/kubectl" --kubeconfig "$admin_kubeconfig" "$@"; }

wait_for() { # seconds what command...: runs the command until it succeeds
  local seconds=$1 what=$2 deadline
  shift 2
  deadline=$((SECONDS + seconds))
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

# ---------- processes ----------

start() { # name command...: starts a daemon in its own session, records its pid
  local name=$1
  shift
  mkdir -p "$logs" "$pids"
  # 9>&-: the daemon must not inherit the lock of up (down would wait for it forever).
  setsid "$@" </dev/null >>"$logs/$name.log" 2>&1 9>&- &
  echo $! >"$pids/$name.pid"
}

running() { # name
  local pid
  pid=$(cat "$pids/$1.pid" 2>/dev/null) || return 1
  kill -0 "$pid" 2>/dev/null
}

require_running() { # name what: dies with the end of its log when the process exited
  running "$1" && return 0
  tail -n 30 "$logs/$1.log" >&2 || true
  die "$1 exited while waiting for $2; its log is $logs/$1.log (last lines above)"
}

stop() { # name...: TERM to all at once, then KILL to those still there after 10 s
  local name pid i alive=()
  for name in "$@"; do
    pid=$(cat "$pids/$name.pid" 2>/dev/null) || continue
    kill -TERM "$pid" 2>/dev/null && alive+=("$pid")
    rm -f "$pids/$name.pid"
  done
  for _ in $(seq 1 100); do
    ((${#alive[@]})) || return 0
    for i in "${!alive[@]}"; do kill -0 "${alive[$i]}" 2>/dev/null || unset "alive[$i]"; done
    sleep 0.1
  done
  kill -KILL "${alive[@]}" 2>/dev/null || true
}

# ---------- certificates ----------

ca() { # name cn
  [[ -f $pki/$1.crt ]] && return 0
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
    -keyout "$pki/$1.key" -out "$pki/$1.crt" -subj "/CN=$2" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
}

cert() { # name ca cn org usage(client|server|both) [san,...]
  local name=$1 issuer=$2 cn=$3 org=$4 usage=$5 sans=${6:-} eku subject ext
  [[ -f $pki/$name.crt ]] && return 0
  case $usage in
    client) eku=clientAuth ;;
    server) eku=serverAuth ;;
    both) eku=serverAuth,clientAuth ;;
  esac
  subject="/CN=$cn"
  [[ -n $org ]] && subject="/O=$org$subject"
  ext=$(mktemp)
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=%s\n' "$eku" >"$ext"
  [[ -n $sans ]] && echo "subjectAltName=$sans" >>"$ext"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "$subject" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/$issuer.crt" -CAkey "$pki/$issuer.key" \
    -CAcreateserial -days 365 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
  rm -f "$ext" "$pki/$name.csr"
}

kubeconfig() { # file cert-name user: a kubeconfig for the apiserver at SERVER with that client cert
  local server=${SERVER:-https://127.0.0.1:$APISERVER_PORT}
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: ironmesh-k8s
  cluster:
    certificate-authority: $pki/ca.crt
    server: $server
users:
- name: $3
  user:
    client-certificate: $pki/$2.crt
    client-key: $pki/$2.key
contexts:
- name: $3@ironmesh-k8s
  context: {cluster: ironmesh-k8s, user: $3}
current-context: $3@ironmesh-k8s
EOF
}

certificates() {
  mkdir -p "$pki"
  chmod 700 "$pki"
  ca ca ironmesh-k8s-ca
  # The aggregation layer's own CA, as kubeadm keeps it: a client certificate of the cluster CA must not
  # be able to act as the front proxy.
  ca front-proxy-ca ironmesh-k8s-front-proxy-ca
  cert apiserver ca kube-apiserver "" server \
    "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,IP:127.0.0.1,IP:$HOST_IP,IP:$KUBERNETES_SERVICE_IP"
  cert apiserver-kubelet-client ca kube-apiserver-kubelet-client system:masters client
  cert front-proxy-client front-proxy-ca front-proxy-client "" client
  cert admin ca kubernetes-admin system:masters client
  cert controller-manager ca system:kube-controller-manager "" client
  cert scheduler ca system:kube-scheduler "" client
  cert kube-proxy ca system:kube-proxy "" client
  local node
  for node in "${NODES[@]}"; do
    cert "$node" ca "system:node:$node" system:nodes client
    cert "$node-serving" ca "system:node:$node" system:nodes server "DNS:$node,IP:$(node_ip "$node")"
  done
  # The service-account token signer (RS256, what every client verifies).
  [[ -f $pki/sa.key ]] || {
    openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
    openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  }
}

# ---------- control plane ----------

control_plane_up() {
  certificates
  mkdir -p "$state/etcd" "$state/kubeconfig"
  chmod 700 "$state/etcd"
  kubeconfig "$admin_kubeconfig" admin kubernetes-admin
  kubeconfig "$state/kubeconfig/controller-manager" controller-manager system:kube-controller-manager
  kubeconfig "$state/kubeconfig/scheduler" scheduler system:kube-scheduler

  # The node network's host side first: the apiserver advertises HOST_IP (the `kubernetes` Service's
  # endpoint, which must not be loopback) and the relay below listens on it.
  if ! ip link show "$HOST_BRIDGE" >/dev/null 2>&1; then
    ip link add "$HOST_BRIDGE" type bridge
    ip addr add "$HOST_IP/$NODE_NET_PREFIX" dev "$HOST_BRIDGE"
    ip link set "$HOST_BRIDGE" up
  fi
  # The cluster's addresses (198.18.0.0/15: nodes, pods, services) never take the default route off the
  # machine: what the bridge and the pod routes do not cover (a ClusterIP dialled from the host, a node
  # whose route is gone) is unreachable here, instead of leaving through the uplink.
  ip route replace unreachable 198.18.0.0/15

  running etcd || start etcd "$bin/etcd" --name ironmesh-k8s --data-dir "$state/etcd" \
    --listen-client-urls "http://$ETCD_CLIENT" --advertise-client-urls "http://$ETCD_CLIENT" \
    --listen-peer-urls "http://$ETCD_PEER" --initial-advertise-peer-urls "http://$ETCD_PEER" \
    --initial-cluster "ironmesh-k8s=http://$ETCD_PEER" --log-level warn
  wait_for 30 etcd curl -fsS "http://$ETCD_CLIENT/health" || { require_running etcd "its health"; die "etcd not healthy after 30 s; see $logs/etcd.log"; }

  # The admission plugins of a kubeadm cluster (NodeRestriction and the webhooks among them), named so a
  # reader sees them; the defaults stay on too.
  local admission=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultStorageClass,DefaultTolerationSeconds
  admission+=,Priority,PodSecurity,RuntimeClass,ResourceQuota,NodeRestriction
  admission+=,MutatingAdmissionWebhook,ValidatingAdmissionPolicy,ValidatingAdmissionWebhook
  running kube-apiserver || start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://$ETCD_CLIENT" \
    --bind-address 127.0.0.1 --secure-port "$APISERVER_PORT" --advertise-address "$HOST_IP" \
    --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --enable-admission-plugins "$admission" \
    --allow-privileged=true \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" --proxy-client-key-file "$pki/front-proxy-client.key" \
    --requestheader-client-ca-file "$pki/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --enable-aggregator-routing=true
  # --enable-aggregator-routing: the apiserver (on the host, which has no kube-proxy) reaches webhook and
  # aggregated services at their endpoints' pod addresses, routed to the nodes, not at their ClusterIPs.

  # Nodes and pods reach the apiserver at HOST_IP (the `kubernetes` Service's endpoint): relay it to the
  # loopback listener, so the apiserver itself listens only on loopback.
  running apiserver-relay || start apiserver-relay socat "${RELAY_ARGS[@]}"

  wait_for 90 kube-apiserver kubectl_admin get --raw /readyz ||
    { require_running kube-apiserver "/readyz"; die "kube-apiserver not ready after 90 s; see $logs/kube-apiserver.log"; }

  running kube-controller-manager || start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$state/kubeconfig/controller-manager" \
    --authentication-kubeconfig "$state/kubeconfig/controller-manager" \
    --authorization-kubeconfig "$state/kubeconfig/controller-manager" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" \
    --leader-elect=false \
    --use-service-account-credentials=true \
    --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
    --allocate-node-cidrs=true --cluster-cidr "$CLUSTER_CIDR" --node-cidr-mask-size 24 \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --controllers '*,bootstrapsigner,tokencleaner'
  running kube-scheduler || start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$state/kubeconfig/scheduler" \
    --authentication-kubeconfig "$state/kubeconfig/scheduler" \
    --authorization-kubeconfig "$state/kubeconfig/scheduler" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT" \
    --leader-elect=false

  # The controller-manager creates each namespace's `default` ServiceAccount; pods need it.
  wait_for 60 "the default ServiceAccount" kubectl_admin -n default get serviceaccount default ||
    { require_running kube-controller-manager "the default ServiceAccount"; die "no default ServiceAccount after 60 s; see $logs/kube-controller-manager.log"; }
  require_running kube-scheduler "the control plane"
  log "control plane up: kube-apiserver https://127.0.0.1:$APISERVER_PORT (and $HOST_IP for the nodes)"
}

# ---------- nodes ----------

cgroup_hierarchies() { # [--with-unified]: every cgroup v1 hierarchy (the machines are cgroup v1, where
  # 1.34's kubelet still runs); with the hybrid layout's v2 mount too, where runc also makes the pods'
  # cgroups, for cleanup
  local dir
  for dir in /sys/fs/cgroup/*/; do
    dir=${dir%/}
    [[ $(basename "$dir") == unified && ${1:-} != --with-unified ]] && continue
    [[ -f $dir/cgroup.procs ]] && echo "$dir"
  done
}

node_cgroups_create() { # node: the node's cgroup root in every hierarchy (the kubelet's cgroupRoot)
  local h
  for h in $(cgroup_hierarchies); do
    mkdir -p "$h/$1"
    if [[ -f $h/cpuset.cpus ]]; then
      cat "$h/cpuset.cpus" >"$h/$1/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h/$1/cpuset.mems"
    fi
  done
}

node_network_up() { # node
  local node=$1 ip veth
  ip=$(node_ip "$node")
  veth=$(node_veth "$node")
  ip netns list | grep -qx "$node\( .*\)\?" && return 0
  ip netns add "$node"
  ip link add "$veth" type veth peer name eth0 netns "$node"
  ip link set "$veth" master "$HOST_BRIDGE" up
  ip -n "$node" link set lo up
  ip -n "$node" addr add "$ip/$NODE_NET_PREFIX" dev eth0
  ip -n "$node" link set eth0 up
  # No default route: only the cluster's own range (198.18.0.0/15, services included: kube-proxy's
  # OUTPUT DNAT needs a route to exist first) goes to the host, so a pull of an image that was not imported
  # or a lookup through the host's resolver fails at once in the node instead of sending packets out.
  ip -n "$node" route add 198.18.0.0/15 via "$HOST_IP"
  ip netns exec "$node" sysctl -qw net.ipv4.ip_forward=1
  # Service traffic between two pods of one node crosses the pod bridge: kube-proxy's NAT must see it.
  ip netns exec "$node" sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null ||
    log "$node: net.bridge.bridge-nf-call-iptables not settable in the node namespace (same-node service hairpin may fail)"
}

write_if_changed() { # file: stdin, written only when it differs (kube-proxy exits when its configuration
  # file changes, and a second `up` must leave a running node alone)
  local new
  new=$(cat)
  [[ -f $1 && $(cat "$1") == "$new" ]] || printf '%s\n' "$new" >"$1"
}

node_files() { # node: containerd, CNI, kubelet and kube-proxy configuration
  local node=$1 dir=$state/$1 ip
  ip=$(node_ip "$node")
  mkdir -p "$dir/containerd" "$dir/cni/net.d" "$dir/kubelet" "$dir/pki"
  write_if_changed "$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
[grpc]
  address = "$dir/containerd/containerd.sock"
[ttrpc]
  address = "$dir/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$SANDBOX_IMAGE"
  # The test machines run everything as root under a workplace that may already have lowered the OOM
  # score adjustment; a container asking for a lower one gets the current one instead of failing.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Pod network namespaces under this node's state, not /run/netns, so the two nodes' and the local
  # runtime's namespaces never mix.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "/usr/sbin/runc"
        Root = "$dir/containerd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni/net.d"
    # containerd writes the network configuration from this once the kubelet tells it the node's pod CIDR.
    conf_template = "$dir/cni/template.json"
EOF
  write_if_changed "$dir/cni/template.json" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "imk8s",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$dir/cni/ipam",
        "ranges": [[{"subnet": "{{.PodCIDR}}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    }
  ]
}
EOF
  # What pods with dnsPolicy Default (CoreDNS itself) get: no upstream resolver, none is reachable; the
  # others get the cluster DNS (clusterDNS below).
  echo "# ironmesh test cluster: no upstream DNS" >"$dir/resolv.conf"
  SERVER=https://$HOST_IP:$APISERVER_PORT kubeconfig "$dir/kubelet.kubeconfig" "$node" "system:node:$node"
  SERVER=https://$HOST_IP:$APISERVER_PORT kubeconfig "$dir/kube-proxy.kubeconfig" kube-proxy system:kube-proxy
  write_if_changed "$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $ip
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
tlsCertFile: $pki/$node-serving.crt
tlsPrivateKeyFile: $pki/$node-serving.key
containerRuntimeEndpoint: unix://$dir/containerd/containerd.sock
cgroupDriver: cgroupfs
cgroupRoot: /$node
# Each kubelet's own: with one shared folder one kubelet's log cleanup would see the other's pods as
# orphans.
podLogsDir: $dir/pod-logs
failCgroupV1: false
failSwapOn: false
resolvConf: $dir/resolv.conf
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: cluster.local
# Images are imported, never pulled: garbage-collecting one would lose it for good.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%}
serializeImagePulls: false
EOF
  write_if_changed "$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
hostnameOverride: $node
clusterCIDR: $CLUSTER_CIDR
clientConnection: {kubeconfig: $dir/kube-proxy.kubeconfig}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# Conntrack limits and timeouts are the host's, not settable from a node namespace: leave them alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

node_up() { # node images-dir
  # Its daemons run under `nsenter --net`: in the node's network namespace only, in the host's mount
  # namespace (not `ip netns exec`, which makes a mount namespace of its own), so the kubelet's volume
  # mounts and containerd's containers see one filesystem, as on a real node.
  local node=$1 images=$2 dir=$state/$1 name archive
  node_network_up "$node"
  node_cgroups_create "$node"
  node_files "$node"
  running "$node-containerd" || start "$node-containerd" nsenter --net="/run/netns/$node" -- containerd --config "$dir/containerd.toml"
  wait_for 30 "$node's containerd" ctr --address "$dir/containerd/containerd.sock" version ||
    { require_running "$node-containerd" "its socket"; die "$node: containerd not answering after 30 s; see $logs/$node-containerd.log"; }
  while read -r name archive; do
    if ! ctr --address "$dir/containerd/containerd.sock" -n k8s.io images ls -q | grep -qxF "$name"; then
      ctr --address "$dir/containerd/containerd.sock" -n k8s.io images import "$archive" >/dev/null ||
        die "$node: importing $archive ($name) into containerd failed"
    fi
  done <"$images"
  running "$node-kubelet" || start "$node-kubelet" nsenter --net="/run/netns/$node" -- "$bin/kubelet" \
    --config "$dir/kubelet.yaml" --kubeconfig "$dir/kubelet.kubeconfig" \
    --root-dir "$dir/kubelet" --cert-dir "$dir/pki" \
    --hostname-override "$node" --node-ip "$(node_ip "$node")" --v 1
  running "$node-kube-proxy" || start "$node-kube-proxy" nsenter --net="/run/netns/$node" -- "$bin/kube-proxy" \
    --config "$dir/kube-proxy.yaml"
}

pod_routes_up() { # each node's pod CIDR routed to it from the other nodes and the host
  local node other cidr
  for node in "${NODES[@]}"; do
    cidr=$(kubectl_admin get node "$node" -o 'jsonpath={.spec.podCIDR}')
    [[ -n $cidr ]] || die "$node has no pod CIDR (the controller-manager allocates them); see $logs/kube-controller-manager.log"
    ip route replace "$cidr" via "$(node_ip "$node")" dev "$HOST_BRIDGE"
    for other in "${NODES[@]}"; do
      [[ $other == "$node" ]] || ip -n "$other" route replace "$cidr" via "$(node_ip "$node")" dev eth0
    done
  done
}

# The kubelet sets these host-wide at start (vm.overcommit_memory=1, kernel.panic=10,
# kernel.panic_on_oops=1...: a node's defaults); `down` puts back what the machine had.
KERNEL_TUNABLES=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

nodes_up() {
  local images=$state/images.list node
  [[ -f $state/sysctl.saved ]] || sysctl "${KERNEL_TUNABLES[@]}" | sed 's/ = /=/' >"$state/sysctl.saved"
  [[ -d /var/log/containers ]] || touch "$state/var-log-containers.created"
  IRONMESH_K8S_BIN=$bin "$repo/images/build.sh" "${IRONMESH_K8S_CACHE:-/var/cache/ironmesh/k8s}/images" >"$images"
  for node in "${NODES[@]}"; do node_up "$node" "$images"; done
  for node in "${NODES[@]}"; do
    wait_for 120 "$node registered" kubectl_admin get node "$node" ||
      { require_running "$node-kubelet" "registration"; die "$node did not register in 120 s; see $logs/$node-kubelet.log"; }
    wait_for 60 "$node's pod CIDR" test -n "$(kubectl_admin get node "$node" -o 'jsonpath={.spec.podCIDR}')" || true
  done
  pod_routes_up
  for node in "${NODES[@]}"; do
    wait_for 120 "$node Ready" kubectl_admin wait --for=condition=Ready "node/$node" --timeout=5s ||
      { require_running "$node-kubelet" "Ready"; die "$node not Ready after 120 s; see $logs/$node-kubelet.log and $logs/$node-containerd.log"; }
    require_running "$node-kube-proxy" "the node"
  done
  log "nodes Ready: ${NODES[*]}"
  dns_up
}

# The cluster DNS as kubeadm deploys it (Deployment and Service kube-dns in kube-system, the same RBAC),
# with CoreDNS from scripts/k8s-build.sh; no forward plugin: nothing upstream is reachable.
dns_up() {
  kubectl_admin apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health {
            lameduck 5s
        }
        ready
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
            fallthrough in-addr.arpa ip6.arpa
            ttl 30
        }
        cache 30
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      priorityClassName: system-cluster-critical
      serviceAccountName: coredns
      dnsPolicy: Default
      containers:
      - name: coredns
        image: localhost/ironmesh/coredns:v1.14.0
        imagePullPolicy: IfNotPresent
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {containerPort: 53, name: dns, protocol: UDP}
        - {containerPort: 53, name: dns-tcp, protocol: TCP}
        livenessProbe:
          httpGet: {path: /health, port: 8080}
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
          periodSeconds: 2
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes:
      - name: config
        configMap: {name: coredns, items: [{key: Corefile, path: Corefile}]}
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  selector: {k8s-app: kube-dns}
  clusterIP: $DNS_SERVICE_IP
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
EOF
  kubectl_admin -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null ||
    die "the cluster DNS (kube-system/coredns) is not available after 120 s: kubectl -n kube-system describe pod -l k8s-app=kube-dns"
  log "cluster DNS: kube-system/kube-dns at $DNS_SERVICE_IP (CoreDNS)"
}

up() {
  [[ $(id -u) -eq 0 ]] || die "run as root: the nodes are network namespaces with their own containerd"
  local what=${1:-all} tool
  for tool in openssl socat nsenter curl; do
    command -v "$tool" >/dev/null || die "$tool missing: scripts/install-deps.sh k8s"
  done
  if [[ $what != --control-plane-only ]]; then
    for tool in containerd ctr conntrack gcc /usr/lib/cni/bridge /usr/lib/cni/host-local /bin/busybox; do
      command -v "$tool" >/dev/null || die "$tool missing: scripts/install-deps.sh k8s"
    done
  fi
  bin=$(scripts/k8s-build.sh)
  mkdir -p "$state"
  state=$(realpath "$state")
  exec 9>"$LOCK"
  flock -w 600 9 || die "another scripts/k8s-env.sh has held $LOCK for 10 min"
  local owner
  owner=$(cat "$OWNER" 2>/dev/null || true)
  if [[ -n $owner && $owner != "$state" ]]; then
    if [[ ! -d $owner ]]; then
      # A test killed after it removed its state dir (or before its down): nothing can use that cluster
      # any more, but its daemons, mounts, namespaces, bridge and cgroups may still hold the machine's names.
      log "the owner file names $owner, which no longer exists: removing what its cluster left"
      remove_stale "$owner"
    elif [[ -f $owner/pids/kube-apiserver.pid ]] && kill -0 "$(cat "$owner/pids/kube-apiserver.pid")" 2>/dev/null; then
      die "a cluster of state dir $owner is up (its names, addresses and ports are the machine's only ones): use it (IRONMESH_K8S_STATE=$owner, kubeconfig $owner/admin.kubeconfig) or stop it (IRONMESH_K8S_STATE=$owner scripts/k8s-env.sh down)"
    else
      log "taking over from $owner, whose apiserver is not running: removing what its cluster left"
      remove_stale "$owner"
    fi
  fi
  echo "$state" >"$OWNER"
  control_plane_up
  [[ $what == --control-plane-only ]] || nodes_up
  echo "$admin_kubeconfig"
}

# ---------- down ----------

kill_cgroup_tree() { # node: every process of the node's pods (under its cgroup root), until none is left
  local h procs dirs=()
  for h in $(cgroup_hierarchies --with-unified); do [[ -d $h/$1 ]] && dirs+=("$h/$1"); done
  ((${#dirs[@]})) || return 0
  for _ in $(seq 1 50); do
    # The runtime removes a pod's cgroups as its processes die, so find can meet a directory that went
    # away under it; its failure, through pipefail and set -e, ended down silently with status 1.
    procs=$(find "${dirs[@]}" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u) || true
    [[ -n $procs ]] || return 0
    # shellcheck disable=SC2086
    kill -KILL $procs 2>/dev/null || true
    sleep 0.2
  done
  log "$1: processes left in its cgroups: $procs"
}

down() {
  [[ -d $state ]] && state=$(realpath "$state")
  exec 9>"$LOCK"
  flock -w 600 9 || die "another scripts/k8s-env.sh has held $LOCK for 10 min"
  teardown
}

remove_stale() { # dir: what the stale cluster of another state dir left, as its down would (LOCK held)
  local dir=$1 daemons
  # Its pid files may have gone with the dir; its daemons name files under it on their command lines
  # (etcd's data dir, the certificates, containerd's socket, the shims' -address).
  daemons=$(pgrep -f -- "$(printf '%s/' "$dir" | sed 's/[]\\.^$*+?(){}|[]/\\&/g')" || true)
  daemons+=" $(pgrep -xf -- "socat ${RELAY_ARGS[*]}" || true)"
  # shellcheck disable=SC2086
  [[ -z ${daemons// /} ]] || kill -KILL $daemons 2>/dev/null || true
  (
    state=$dir logs=$dir/logs pids=$dir/pids
    teardown
  )
}

teardown() { # everything up made for $state (LOCK held)
  local node h shims mounts owner
  owner=$(cat "$OWNER" 2>/dev/null || true)
  stop "${NODES[@]/%/-kubelet}" "${NODES[@]/%/-kube-proxy}"
  for node in "${NODES[@]}"; do
    [[ -n $owner && $owner != "$state" ]] || kill_cgroup_tree "$node"
    # The runc shims outlive containerd by design; theirs are the ones whose -address is this node's.
    shims=$(pgrep -f -- "containerd-shim-runc-v2 .*-address $state/$node/containerd/containerd.sock" || true)
    # shellcheck disable=SC2086
    [[ -z $shims ]] || kill -KILL $shims 2>/dev/null || true
  done
  stop "${NODES[@]/%/-containerd}"
  stop kube-scheduler kube-controller-manager apiserver-relay
  stop kube-apiserver
  stop etcd
  # Mounts under the state dir: the kubelet's root (bind, rshared), volumes (tmpfs), pod network
  # namespaces, container root filesystems (overlay) and shm. Deepest first.
  if [[ -d $state ]]; then
    mounts=$(awk -v s="$state/" 'index($2, s) == 1 { print $2 }' /proc/self/mounts | sort -r)
    for h in $mounts; do umount -l "$h" 2>/dev/null || true; done
  fi
  if [[ -z $owner || $owner == "$state" ]]; then
    for node in "${NODES[@]}"; do
      ip netns del "$node" 2>/dev/null || true
      # Its host end, even when the namespace's name was lost (deleting one end deletes the pair).
      ip link del "$(node_veth "$node")" 2>/dev/null || true
      for h in $(cgroup_hierarchies --with-unified); do
        if [[ -d $h/$node ]]; then find "$h/$node" -depth -type d -exec rmdir {} + 2>/dev/null || true; fi
      done
    done
    ip link del "$HOST_BRIDGE" 2>/dev/null || true # its routes go with it
    ip route del unreachable 198.18.0.0/15 2>/dev/null || true
    rm -f "$OWNER"
  elif [[ -n $owner ]]; then
    log "the machine's cluster names (network namespaces, $HOST_BRIDGE, cgroups) are $owner's: left alone"
  fi
  # The kubelets' links to their containers' logs (in /var/log/containers, which they cannot be told
  # to move) and the kernel tunables they changed.
  if [[ -d /var/log/containers ]]; then
    find /var/log/containers -maxdepth 1 -lname "$state/*" -delete
    [[ ! -f $state/var-log-containers.created ]] || rmdir /var/log/containers 2>/dev/null || true
  fi
  if [[ -f $state/sysctl.saved ]]; then
    # shellcheck disable=SC2046
    sysctl -qw $(cat "$state/sysctl.saved") || log "could not restore the kernel tunables of $state/sysctl.saved"
  fi
  if [[ -d $state ]]; then
    # Everything but the logs (and the certificates' CA is regenerated on the next up: nothing trusts it).
    find "$state" -mindepth 1 -maxdepth 1 ! -name logs -exec rm -rf {} +
  fi
  log "down: nothing of the cluster is left but its logs in $logs"
}

# ---------- status ----------

status() {
  local name
  echo "owner of the machine's cluster names: $(cat "$OWNER" 2>/dev/null || echo none)"
  for name in etcd kube-apiserver apiserver-relay kube-controller-manager kube-scheduler \
    imk8s-node1-containerd imk8s-node1-kubelet imk8s-node1-kube-proxy \
    imk8s-node2-containerd imk8s-node2-kubelet imk8s-node2-kube-proxy; do
    if running "$name"; then echo "$name: running (pid $(cat "$pids/$name.pid"))"; else echo "$name: stopped"; fi
  done
  if [[ -f $admin_kubeconfig ]] && running kube-apiserver; then
    bin=$(scripts/k8s-build.sh)
    kubectl_admin get nodes -o wide 2>&1 || true
    echo "kubeconfig: $admin_kubeconfig"
  fi
}

case ${1:-} in
  up) shift; up "$@" ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up [--control-plane-only] | down | status" >&2; exit 2 ;;
esac
