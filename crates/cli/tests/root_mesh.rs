//! Root only: the mesh on the local runtime, end to end, with the real binaries (`ironmesh`,
//! `ironmesh-proxy`, `ironmesh-httpbin`), real network namespaces, iptables and `curl`.
//! It checks what users rely on beyond the walkthrough: a killed container comes back and traffic
//! resumes while other pods never notice; a killed control plane leaves traffic working on cached
//! configuration and certificates; `down` leaves nothing of the cluster behind.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const READY: Duration = Duration::from_secs(90);
const RECOVER: Duration = Duration::from_secs(30);

#[test]
fn root_killed_containers_restart_and_only_their_pod_notices() {
    let c = Cluster::up();
    c.deploy();
    c.wait_for("foo", "foo", "200/0", READY);
    c.wait_for("legacy", "legacy", "200/0", READY);
    let httpbin = c.pod("httpbin", "foo");
    let legacy_httpbin = c.pod("httpbin", "legacy");

    for container in ["httpbin", "ironmesh-proxy"] {
        let before = c.restarts("foo", &httpbin, container);
        kill9(c.container_pid("foo", &httpbin, container));
        // The other pods never notice: legacy traffic keeps flowing while foo's container is down.
        assert_eq!(
            c.call("legacy", "legacy"),
            "200/0",
            "legacy pods are untouched"
        );
        c.wait_for("foo", "foo", "200/0", RECOVER);
        assert_eq!(
            c.wait_restarts("foo", &httpbin, container, before + 1, RECOVER),
            before + 1,
            "{container} restarted once"
        );
    }
    assert_eq!(
        c.restarts("legacy", &legacy_httpbin, "httpbin"),
        0,
        "no other pod restarted"
    );
    assert_eq!(
        c.pod("httpbin", "foo"),
        httpbin,
        "the pod was restarted in place, not replaced"
    );

    // `down` after the control plane died still removes everything the cluster left running.
    let prefix = c.netns_prefix();
    let app = c.container_pid("foo", &httpbin, "httpbin");
    kill9(c.control_plane_pid());
    c.ok(&["down"]);
    let netns = netns_list();
    assert!(
        !netns.contains(&prefix),
        "namespaces left by a dead control plane survived down:\n{netns}"
    );
    assert!(
        !alive(app),
        "a container of a dead control plane survived down"
    );
}

#[test]
fn root_traffic_survives_a_dead_control_plane_and_down_leaves_nothing() {
    let c = Cluster::up();
    c.deploy();
    c.wait_for("foo", "foo", "200/0", READY);
    c.wait_for("foo", "legacy", "200/0", READY);
    let prefix = c.netns_prefix();
    let foo_sleep = c.pod("sleep", "foo");

    let root = c.ok(&["ca", "root", "-o", "pem"]);
    // Proxies keep their last configuration and certificates.
    let control_plane = c.control_plane_pid();
    kill9(control_plane);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!alive(control_plane));
    // (`ironmesh exec` needs the API, so curl runs straight in the pod's network namespace.)
    let sleep = c.pod_netns("foo", &foo_sleep);
    for _ in 0..5 {
        assert_eq!(
            curl_in(&sleep, "foo"),
            "200/0",
            "new connections work on cached config"
        );
        assert_eq!(curl_in(&sleep, "legacy"), "200/0");
    }

    // `up` after the crash cleans what was left and brings the pods back.
    c.ok(&["up"]);
    c.wait_for("foo", "foo", "200/0", READY);
    c.wait_for("legacy", "foo", "200/0", READY);
    assert_eq!(
        c.ok(&["ca", "root", "-o", "pem"]),
        root,
        "the restarted control plane keeps its root CA"
    );

    let pids: Vec<i32> = ["foo", "legacy"]
        .iter()
        .flat_map(|ns| {
            let pod = c.pod("sleep", ns);
            [c.container_pid(ns, &pod, "sleep")]
        })
        .collect();
    let restarted_control_plane = c.control_plane_pid();
    c.ok(&["down"]);
    let netns = netns_list();
    assert!(
        !netns.contains(&prefix),
        "network namespaces left after down:\n{netns}"
    );
    for pid in pids {
        assert!(!alive(pid), "container process {pid} left after down");
    }
    assert!(
        !alive(restarted_control_plane),
        "control plane left after down"
    );
    let links = String::from_utf8_lossy(
        &Command::new("ip")
            .args(["-o", "link"])
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    let cluster_id = prefix.trim_start_matches("im-").trim_end_matches('-');
    assert!(
        !links.contains(cluster_id),
        "links of the cluster left in the host namespace:\n{links}"
    );
    let etc = std::fs::read_dir("/etc/netns")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    assert!(
        etc.iter().all(|n| !n.starts_with(&prefix)),
        "/etc/netns files left: {etc:?}"
    );
}

#[test]
fn root_certificate_and_root_rotation_under_traffic_fail_no_request() {
    require_root();
    build_companions();
    // Certificates live 4 s, so every workload renews (at half its life) several times during the test.
    let c = Cluster::up_foo_with_mutual_tls("4s", READY);
    let root_before = c.ok(&["ca", "root", "-o", "pem"]);
    assert_eq!(root_before.matches("BEGIN CERTIFICATE").count(), 1);

    // Requests flow from the sleep pod for the whole test, each on a new connection (a new curl).
    let sleep = c.pod_netns("foo", &c.pod("sleep", "foo"));
    let load = Command::new("ip")
        .args(["netns", "exec", &sleep, "sh", "-c"])
        .arg(
            "ok=0; bad=0; end=$(($(date +%s) + 22)); while [ $(date +%s) -lt $end ]; do \
             c=$(curl -s -o /dev/null -m 5 -w '%{http_code}' http://httpbin.foo:8000/ip); \
             if [ \"$c\" = 200 ]; then ok=$((ok+1)); else bad=$((bad+1)); echo \"failed: $c\" >&2; fi; \
             sleep 0.05; done; echo \"$ok $bad\"",
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let rotated = c.ok(&["ca", "rotate-root"]);
    assert!(rotated.contains("new root"), "{rotated}");
    assert_eq!(
        c.ok(&["ca", "root", "-o", "pem"])
            .matches("BEGIN CERTIFICATE")
            .count(),
        2,
        "overlap: both roots"
    );
    // Every workload renews from the new root within half a lifetime (plus jitter and backoff).
    std::thread::sleep(Duration::from_secs(8));
    c.ok(&["ca", "retire-root"]);
    let root_after = c.ok(&["ca", "root", "-o", "pem"]);
    assert_eq!(root_after.matches("BEGIN CERTIFICATE").count(), 1);
    assert_ne!(root_after, root_before, "the trusted root changed");

    let output = load.wait_with_output().unwrap();
    let counts = String::from_utf8_lossy(&output.stdout);
    let mut numbers = counts.split_whitespace().map(|n| n.parse::<u32>().unwrap());
    let (ok, bad) = (numbers.next().unwrap(), numbers.next().unwrap());
    assert!(ok > 50, "too few requests to mean anything: {ok}");
    assert_eq!(
        bad,
        0,
        "requests failed across rotations: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // The workload certificate now chains to the new root and lives 4 s.
    let secret = c.ok(&[
        "proxy-config",
        "secret",
        &c.pod("httpbin", "foo"),
        "-n",
        "foo",
        "-o",
        "pem",
    ]);
    let leaf_end =
        secret.find("-----END CERTIFICATE-----").unwrap() + "-----END CERTIFICATE-----".len();
    let leaf = &secret[..leaf_end];
    let dir = c.home.path();
    std::fs::write(dir.join("leaf.pem"), leaf).unwrap();
    std::fs::write(dir.join("root.pem"), &root_after).unwrap();
    let verify = Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(dir.join("root.pem"))
        .arg(dir.join("leaf.pem"))
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "openssl verify: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
}

fn peer_authentication(namespace: &str, mode: &str) -> String {
    format!(
        "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: {namespace}\nspec:\n  mtls:\n    mode: {mode}\n"
    )
}

/// docs/SEMANTICS.md#outcomes rows the walkthrough does not visit: a DISABLE server (plaintext 200, ISTIO_MUTUAL 503) and
/// ISTIO_MUTUAL to a PERMISSIVE server (200 over mTLS), with the modern PeerAuthentication API.
#[test]
fn root_disable_and_permissive_servers_behave_as_istio() {
    let c = Cluster::up();
    c.ok(&["create", "ns", "foo"]);
    c.apply_injected("httpbin/httpbin.yaml", "foo");
    c.apply_injected("sleep/sleep.yaml", "foo");
    c.ok(&["create", "ns", "legacy"]);
    c.ok(&[
        "apply",
        "-f",
        samples().join("sleep/sleep.yaml").to_str().unwrap(),
        "-n",
        "legacy",
    ]);
    c.wait_for("foo", "foo", "200/0", READY);
    let apply = |name: &str, yaml: &str| {
        let path = c.home.path().join(name);
        std::fs::write(&path, yaml).unwrap();
        c.ok(&["apply", "-f", path.to_str().unwrap()]);
    };
    let settle = Duration::from_secs(5);

    apply("pa.yaml", &peer_authentication("foo", "DISABLE"));
    c.wait_for("foo", "foo", "200/0", settle);
    c.wait_for("legacy", "foo", "200/0", settle);

    apply("rule.yaml", ISTIO_MUTUAL_EVERYWHERE);
    c.wait_for("foo", "foo", "503/0", settle);
    let body = {
        let pod = c.pod("sleep", "foo");
        c.ok(&[
            "exec",
            &pod,
            "-n",
            "foo",
            "-c",
            "sleep",
            "--",
            "curl",
            "-s",
            "http://httpbin.foo:8000/ip",
        ])
    };
    assert!(
        body.starts_with(
            "upstream connect error or disconnect/reset before headers. reset reason:"
        ),
        "Envoy's 503 body: {body}"
    );

    apply("pa.yaml", &peer_authentication("foo", "PERMISSIVE"));
    c.wait_for("foo", "foo", "200/0", settle);
    c.wait_for("legacy", "foo", "200/0", settle);
    let pod = c.pod("sleep", "foo");
    let headers = c.ok(&[
        "exec",
        &pod,
        "-n",
        "foo",
        "-c",
        "sleep",
        "--",
        "curl",
        "-s",
        "http://httpbin.foo:8000/headers",
    ]);
    assert!(
        headers.contains("URI=spiffe://cluster.local/ns/foo/sa/default"),
        "over mTLS the server sees the client's identity: {headers}"
    );
}
