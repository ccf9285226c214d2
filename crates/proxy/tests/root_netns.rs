//! ROOT ONLY: two pods with sidecars in network namespaces this test creates (veth pairs, the real
//! iptables script, the real `ironmesh-proxy` binary, a tiny HTTP app served by this test, real `curl`),
//! plus a third namespace without a sidecar. Fails loudly when it cannot set up; the Drop guard removes
//! everything.
#![allow(unsafe_code, reason = "setns on a thread and geteuid go through libc")]

use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ironmesh_identity::{CredentialAuthority, PodClaims, write_token_file};
use ironmesh_proto::pb::{
    ClientTls, ClientTlsMode, Endpoint, InboundPort, Protocol, ProxyConfig, ServerMode, Service,
    ServicePort, Workload,
};

mod netns;
use netns::{App, ControlPlane, Topology, sh};

const APP_PORT: u16 = 8080;

impl Topology {
    fn spawn_in(&mut self, namespace: &str, program: &str, args: &[&str], env: &[(&str, String)]) {
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", namespace, program])
            .args(args)
            .stdout(Stdio::inherit())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        self.children.push(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {program} in {namespace}: {e}")),
        );
    }
}

/// curl's exit code and the response body.
fn curl_body(namespace: &str, url: &str) -> (i32, String) {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            namespace,
            "curl",
            "-s",
            "--max-time",
            "5",
            url,
        ])
        .output()
        .expect("curl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
    )
}

fn curl(namespace: &str, url: &str) -> (i32, String) {
    let output = Command::new("ip")
        .args([
            "netns",
            "exec",
            namespace,
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            url,
        ])
        .output()
        .expect("curl runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).to_string(),
    )
}

fn wait_ready(namespace: &str) {
    for _ in 0..100 {
        if curl(namespace, "http://127.0.0.1:15021/healthz/ready").1 == "200" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the proxy in {namespace} never became ready");
}

fn wait_for_app(namespace: &str) {
    for _ in 0..100 {
        if curl(namespace, &format!("http://127.0.0.1:{APP_PORT}/")).1 == "200" {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("the app in {namespace} never answered on 127.0.0.1:{APP_PORT}");
}

fn proxy_env(
    dir: &Path,
    socket: &Path,
    credentials: &CredentialAuthority,
    pod: &str,
    sa: &str,
) -> Vec<(&'static str, String)> {
    let token_file = dir.join(format!("{pod}.token"));
    let claims = PodClaims {
        namespace: "foo".into(),
        service_account: sa.into(),
        pod: pod.into(),
        pod_uid: format!("{pod}-uid"),
    };
    write_token_file(
        &token_file,
        &credentials.issue(&claims, Duration::from_secs(3600)),
    )
    .unwrap();
    vec![
        ("POD_NAME", pod.to_string()),
        ("POD_NAMESPACE", "foo".to_string()),
        ("SERVICE_ACCOUNT", sa.to_string()),
        (
            "IRONMESH_CONTROL_PLANE",
            format!("unix://{}", socket.display()),
        ),
        ("IRONMESH_TOKEN_FILE", token_file.display().to_string()),
        ("IRONMESH_STATE_DIR", dir.join(pod).display().to_string()),
        ("IRONMESH_TRUST_DOMAIN", "cluster.local".to_string()),
        (
            "RUST_LOG",
            std::env::var("IRONMESH_TEST_PROXY_LOG").unwrap_or_else(|_| "warn".to_string()),
        ),
    ]
}

fn configs(server_ip: &str, client_tls: ClientTlsMode) -> (ProxyConfig, ProxyConfig) {
    let workload = |name: &str, sa: &str, mode: ServerMode| Workload {
        name: name.into(),
        namespace: "foo".into(),
        service_account: sa.into(),
        spiffe_id: format!("spiffe://cluster.local/ns/foo/sa/{sa}"),
        ports: vec![InboundPort {
            port: APP_PORT.into(),
            protocol: Protocol::Http as i32,
            mode: mode as i32,
        }],
        default_mode: mode as i32,
        ..Default::default()
    };
    let services = vec![Service {
        hostname: "httpbin.foo.svc.cluster.local".into(),
        namespace: "foo".into(),
        vip: String::new(),
        ports: vec![ServicePort {
            port: APP_PORT.into(),
            target_port: APP_PORT.into(),
            protocol: Protocol::Http as i32,
            tls: Some(ClientTls {
                mode: client_tls as i32,
                ..Default::default()
            }),
        }],
        endpoints: vec![Endpoint {
            ip: server_ip.into(),
            mtls_ready: true,
            spiffe_id: "spiffe://cluster.local/ns/foo/sa/httpbin".into(),
        }],
    }];
    let config = |workload| ProxyConfig {
        version: String::new(),
        workload: Some(workload),
        services: services.clone(),
        auto_mtls: true,
        ..Default::default()
    };
    (
        config(workload("sleep-1", "sleep", ServerMode::Permissive)),
        config(workload("httpbin-1", "httpbin", ServerMode::Strict)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_strict_resets_plaintext_and_sidecars_talk_mtls() {
    assert!(
        nix_is_root(),
        "root_* tests need root (network namespaces and iptables)"
    );
    let control = ControlPlane::start();

    let tag = std::process::id() % 100_000;
    let (client_ns, server_ns, legacy_ns) = (
        format!("imc{tag}"),
        format!("ims{tag}"),
        format!("iml{tag}"),
    );
    let mut topology = Topology {
        namespaces: vec![],
        children: vec![],
    };
    for ns in [&client_ns, &server_ns, &legacy_ns] {
        topology.netns(ns);
    }
    topology.veth(
        (&client_ns, "10.201.0.1"),
        (&server_ns, "10.201.0.2"),
        &format!("{tag}c"),
    );
    topology.veth(
        (&legacy_ns, "10.202.0.3"),
        (&server_ns, "10.202.0.2"),
        &format!("{tag}l"),
    );

    let (client_config, server_config) = configs("10.201.0.2", ClientTlsMode::IstioMutual);
    control.hub.publish("sleep-1.foo", client_config);
    control.hub.publish("httpbin-1.foo", server_config);

    // IRONMESH_PROXY_BIN measures another build of the same binary (e.g. a size-optimised profile).
    let binary = std::env::var("IRONMESH_PROXY_BIN")
        .unwrap_or_else(|_| env!("CARGO_BIN_EXE_ironmesh-proxy").to_string());
    let binary = binary.as_str();
    for ns in [&client_ns, &server_ns] {
        sh(&["ip", "netns", "exec", ns, binary, "iptables", "--apply"]);
    }
    let _app = App::start_in(
        &server_ns,
        SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, APP_PORT),
    );
    let client_env = proxy_env(
        control.dir.path(),
        &control.socket,
        &control.credentials,
        "sleep-1",
        "sleep",
    );
    let server_env = proxy_env(
        control.dir.path(),
        &control.socket,
        &control.credentials,
        "httpbin-1",
        "httpbin",
    );
    topology.spawn_in(&client_ns, binary, &["run"], &client_env);
    topology.spawn_in(&server_ns, binary, &["run"], &server_env);
    let proxy_pids: Vec<u32> = topology.children[1..].iter().map(Child::id).collect();
    let (client_ns2, server_ns2, legacy_ns2) =
        (client_ns.clone(), server_ns.clone(), legacy_ns.clone());
    let results = tokio::task::spawn_blocking(move || {
        wait_ready(&client_ns2);
        wait_ready(&server_ns2);
        wait_for_app(&server_ns2);
        report_rss("idle (ready, no request yet)", &proxy_pids);
        let sidecar_to_sidecar = curl(&client_ns2, &format!("http://10.201.0.2:{APP_PORT}/"));
        let no_sidecar_to_strict = curl(&legacy_ns2, &format!("http://10.202.0.2:{APP_PORT}/"));
        let load = load_phase(&client_ns2, &proxy_pids);
        (sidecar_to_sidecar, no_sidecar_to_strict, load)
    })
    .await
    .unwrap();
    let (sidecar_to_sidecar, no_sidecar_to_strict, load) = results;
    assert_eq!(
        sidecar_to_sidecar,
        (0, "200".to_string()),
        "sidecar -> sidecar over ISTIO_MUTUAL"
    );
    assert_eq!(
        no_sidecar_to_strict,
        (56, "000".to_string()),
        "no sidecar -> STRICT must be reset"
    );
    assert!(
        control
            .hub
            .status("sleep-1.foo")
            .and_then(|s| s.acked_version)
            .is_some()
    );
    // The client sidecar switches to plaintext (DestinationRule DISABLE): STRICT answers with Envoy's 503.
    let (plaintext_config, _) = configs("10.201.0.2", ClientTlsMode::ClientDisable);
    control.hub.publish("sleep-1.foo", plaintext_config);
    let published = control
        .hub
        .status("sleep-1.foo")
        .and_then(|s| s.published_version);
    for _ in 0..200 {
        if control
            .hub
            .status("sleep-1.foo")
            .and_then(|s| s.acked_version)
            == published
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        control
            .hub
            .status("sleep-1.foo")
            .and_then(|s| s.acked_version),
        published,
        "plaintext config not applied"
    );
    let namespace = client_ns.clone();
    let plaintext_to_strict = tokio::task::spawn_blocking(move || {
        curl_body(&namespace, &format!("http://10.201.0.2:{APP_PORT}/"))
    })
    .await
    .unwrap();
    assert_eq!(
        plaintext_to_strict,
        (0, "upstream connect error or disconnect/reset before headers. reset reason: connection termination".to_string())
    );
    if let Some(summary) = load {
        // Timeouts are the tiny app's queueing; connect/read/write errors or non-2xx are ours.
        let socket_errors = summary
            .lines()
            .find(|line| line.contains("Socket errors"))
            .unwrap_or_default();
        let hard_errors: u64 = socket_errors
            .split(',')
            .filter(|part| !part.contains("timeout"))
            .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
            .sum();
        assert!(
            !summary.contains("Non-2xx") && hard_errors == 0,
            "requests failed under load:\n{summary}"
        );
    }
    drop(topology);
    drop(control);
}

/// Prints (does not assert) each proxy's resident memory.
fn report_rss(moment: &str, pids: &[u32]) {
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|line| line.starts_with(name))
                .map_or("?".to_string(), |l| {
                    l.split_whitespace().nth(1).unwrap_or("?").to_string()
                })
        };
        eprintln!(
            "ironmesh-proxy pid {pid} {moment}: VmRSS {} kB (anon {} kB, file {} kB)",
            field("VmRSS"),
            field("RssAnon"),
            field("RssFile")
        );
    }
}

/// With IRONMESH_ROOT_LOAD_SECONDS=N (bounded to 30), drives `wrk` (closed loop, 16 connections) through the
/// sidecar pair for N seconds and reports RSS afterwards; returns wrk's summary.
fn load_phase(client_ns: &str, pids: &[u32]) -> Option<String> {
    let seconds: u64 = std::env::var("IRONMESH_ROOT_LOAD_SECONDS")
        .ok()?
        .parse()
        .ok()?;
    let seconds = seconds.clamp(1, 30).to_string();
    let output = Command::new("ip")
        .args(["netns", "exec", client_ns, "wrk", "-t1", "-c16", "-d"])
        .arg(format!("{seconds}s"))
        .arg(format!("http://10.201.0.2:{APP_PORT}/"))
        .output()
        .expect("wrk runs (install it to measure under load)");
    let summary = String::from_utf8_lossy(&output.stdout).to_string();
    eprintln!("wrk through the pair:\n{summary}");
    report_rss("right after the load", pids);
    Some(summary)
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}
