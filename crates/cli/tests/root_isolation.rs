//! Root only: pods are containers, and every escape of issue 11's review fails from inside them
//! (`ironmesh exec`, i.e. `runc exec` into the container's namespaces and restrictions), each next to a
//! positive control showing the same check can succeed: the CA and token-signing keys, another pod's
//! credential, the configuration/CA socket, another pod's network namespace, the pod's own iptables,
//! socket mark 1337, the API socket, and IPv6 around the interception rules.
#![allow(
    unsafe_code,
    reason = "the SO_MARK probe builds its socket with libc (socket, setsockopt, connect)"
)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

const READY: Duration = Duration::from_secs(90);
/// Kubernetes' default capabilities as /proc shows them (CHOWN, DAC_OVERRIDE, FOWNER, FSETID, KILL,
/// SETGID, SETUID, SETPCAP, NET_BIND_SERVICE, NET_RAW, SYS_CHROOT, MKNOD, AUDIT_WRITE, SETFCAP).
const DEFAULT_CAPS: &str = "00000000a80425fb";
/// The environment variable that turns this test binary into the SO_MARK probe run inside a pod.
const MARK_PROBE: &str = "IRONMESH_TEST_MARK_PROBE";

/// What a command printed and its exit code.
struct Ran {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Cluster {
    /// `ironmesh exec POD -n NS -c C -- argv...`.
    fn exec_in(&self, namespace: &str, pod: &str, container: &str, argv: &[&str]) -> Ran {
        let mut args = vec!["exec", pod, "-n", namespace, "-c", container, "--"];
        args.extend_from_slice(argv);
        let output = self.command(&args).output().unwrap();
        Ran {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    fn sh(&self, namespace: &str, pod: &str, container: &str, script: &str) -> Ran {
        self.exec_in(namespace, pod, container, &["sh", "-c", script])
    }
}

/// Runs on the host (the positive controls).
fn host(argv: &[&str]) -> Ran {
    let output = Command::new(argv[0])
        .args(&argv[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Ran {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Not a test of its own: when run with [`MARK_PROBE`] set (inside a pod, by the test below), marks a
/// socket 1337 as a sidecar-skipping app would, sends `GET /headers` to httpbin.foo over it and prints
/// what came back: `X-Forwarded-Client-Cert` in the answer means the sidecar carried it anyway.
#[test]
fn so_mark_probe() {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;
    if std::env::var_os(MARK_PROBE).is_none() {
        return;
    }
    let Some(std::net::SocketAddr::V4(address)) =
        std::net::ToSocketAddrs::to_socket_addrs("httpbin.foo:8000")
            .unwrap()
            .find(|a| a.is_ipv4())
    else {
        panic!("httpbin.foo has no IPv4 address");
    };
    // SAFETY: a new descriptor, handed to the TcpStream below (which closes it).
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` is ours; from here on the TcpStream owns and closes it.
    let mut stream = unsafe { std::net::TcpStream::from_raw_fd(fd) };
    let mark: libc::c_int = 1337;
    // SAFETY: setsockopt on our descriptor, with a pointer to a live c_int.
    let set = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_MARK,
            (&mark as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    // Connect either way: the control (uid 1337, no capabilities) cannot mark, and is exempt by uid.
    if set == 0 {
        println!("SO_MARK set");
    } else {
        println!("SO_MARK refused: {}", std::io::Error::last_os_error());
    }
    let target = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: address.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*address.ip()).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: connect with a valid sockaddr_in and its size.
    let connected = unsafe {
        libc::connect(
            fd,
            (&target as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    assert_eq!(connected, 0, "connect: {}", std::io::Error::last_os_error());
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    stream
        .write_all(b"GET /headers HTTP/1.0\r\nHost: httpbin.foo:8000\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    println!("{answer}");
}

#[test]
fn root_pods_are_containers_and_every_escape_fails() {
    let c = Cluster::up();
    c.deploy();
    c.wait_for("foo", "foo", "200/0", READY);
    c.wait_for("legacy", "foo", "200/0", READY);
    let home = c.home.path().canonicalize().unwrap();
    let home = home.to_str().unwrap();
    let sleep = c.pod("sleep", "foo");
    let httpbin = c.pod("httpbin", "foo");
    let legacy = c.pod("sleep", "legacy");

    // kubectl's messages and exit codes.
    let ran = c.sh("foo", &sleep, "sleep", "exit 3");
    assert_eq!(ran.code, 3);
    assert!(
        ran.stderr.contains("command terminated with exit code 3"),
        "{}",
        ran.stderr
    );

    // Each container: own PID namespace, default capabilities, seccomp, no_new_privileges.
    let status = c.sh(
        "foo",
        &sleep,
        "sleep",
        "grep -E '^(CapEff|NoNewPrivs|Seccomp):' /proc/self/status",
    );
    assert!(
        status.stdout.contains(&format!("CapEff:\t{DEFAULT_CAPS}")),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("NoNewPrivs:\t1") && status.stdout.contains("Seccomp:\t2"),
        "{}",
        status.stdout
    );
    let proxy = c.sh(
        "foo",
        &sleep,
        "ironmesh-proxy",
        "id -u; grep -E '^CapEff:' /proc/self/status",
    );
    assert_eq!(
        proxy.stdout, "1337\nCapEff:\t0000000000000000\n",
        "the proxy: uid 1337, no capabilities"
    );
    let pids = c.sh("foo", &sleep, "sleep", "ls /proc | grep -c '^[0-9]'");
    let visible: u32 = pids.stdout.trim().parse().unwrap();
    let on_host = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .chars()
                .all(|ch| ch.is_ascii_digit())
        })
        .count() as u32;
    assert!(
        visible <= 5 && on_host > visible + 10,
        "the container sees {visible} processes, the host {on_host}"
    );
    assert!(
        c.sh("foo", &sleep, "sleep", "touch /usr/x").code != 0,
        "the host view is read-only"
    );
    assert_eq!(
        c.sh("foo", &sleep, "sleep", "touch /tmp/x").code,
        0,
        "/tmp is the container's own"
    );

    // 1. The CA's key and the token-signing key.
    for key in ["ca/root-key.pem", "ca/token-key"] {
        let path = format!("{home}/{key}");
        assert!(
            std::path::Path::new(&path).exists(),
            "control: {path} exists on the host"
        );
        for (ns, pod, container) in [
            ("foo", &sleep, "sleep"),
            ("legacy", &legacy, "sleep"),
            ("foo", &sleep, "ironmesh-proxy"),
        ] {
            let ran = c.exec_in(ns, pod, container, &["cat", &path]);
            assert_ne!(ran.code, 0, "{ns}/{pod}/{container} read {path}");
            assert!(!ran.stdout.contains("PRIVATE KEY"));
        }
    }

    // 2. Another pod's credential, and the pod's own credential from its app container.
    let other_token = format!("{home}/pods/foo/{httpbin}/tokens/istio-token");
    assert!(
        std::path::Path::new(&other_token).exists(),
        "control: httpbin's credential exists"
    );
    for (ns, pod, container) in [
        ("foo", &sleep, "sleep"),
        ("legacy", &legacy, "sleep"),
        ("foo", &sleep, "ironmesh-proxy"),
    ] {
        assert_ne!(
            c.exec_in(ns, pod, container, &["cat", &other_token]).code,
            0,
            "{ns}/{container} read another pod's credential"
        );
    }
    let own = c.exec_in(
        "foo",
        &sleep,
        "ironmesh-proxy",
        &["cat", "/run/secrets/tokens/istio-token"],
    );
    assert_eq!(
        own.code, 0,
        "control: the proxy reads its own credential: {}",
        own.stderr
    );
    assert!(own.stdout.len() > 20);
    assert_ne!(
        c.exec_in(
            "foo",
            &sleep,
            "sleep",
            &["cat", "/run/secrets/tokens/istio-token"]
        )
        .code,
        0,
        "the app container has no credential"
    );

    // 3. The CA / configuration socket (a certificate or the config stream as another pod needs both
    // a credential and the socket): only the proxy container has it.
    let xds = format!("{home}/run/xds.sock");
    for (ns, pod) in [("foo", &sleep), ("legacy", &legacy)] {
        for path in [xds.as_str(), "/run/ironmesh/xds.sock"] {
            let ran = c.exec_in(
                ns,
                pod,
                "sleep",
                &["curl", "-s", "-m", "3", "--unix-socket", path, "http://x/"],
            );
            assert_eq!(ran.code, 7, "{ns} app connected to {path}");
        }
    }
    assert_eq!(
        c.exec_in(
            "foo",
            &sleep,
            "ironmesh-proxy",
            &["test", "-S", "/run/ironmesh/xds.sock"]
        )
        .code,
        0,
        "control: the proxy has the socket"
    );

    // 4. Another pod's network namespace: not visible, and no CAP_SYS_ADMIN / setns to enter one.
    let target_netns = c.pod_netns("foo", &httpbin);
    let control = host(&[
        "nsenter",
        &format!("--net=/run/netns/{target_netns}"),
        "curl",
        "-s",
        "-m",
        "3",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://127.0.0.1:8000/ip",
    ]);
    assert_eq!(
        control.stdout, "200",
        "control: from the host, httpbin answers on loopback in its namespace"
    );
    let ran = c.exec_in(
        "legacy",
        &legacy,
        "sleep",
        &[
            "nsenter",
            &format!("--net=/run/netns/{target_netns}"),
            "curl",
            "-s",
            "-m",
            "3",
            "http://127.0.0.1:8000/ip",
        ],
    );
    assert_ne!(
        ran.code, 0,
        "legacy entered httpbin.foo's namespace: {}",
        ran.stdout
    );
    let ran = c.exec_in("legacy", &legacy, "sleep", &["unshare", "--net", "true"]);
    assert_ne!(ran.code, 0, "legacy may create namespaces");

    // 5. The pod's own interception rules stay.
    let rules = || {
        host(&[
            "ip",
            "netns",
            "exec",
            &c.pod_netns("foo", &sleep),
            "iptables",
            "-t",
            "nat",
            "-S",
        ])
        .stdout
    };
    assert!(
        rules().contains("IRONMESH"),
        "control: the init container installed the rules"
    );
    assert_ne!(
        c.exec_in("foo", &sleep, "sleep", &["iptables", "-t", "nat", "-F"])
            .code,
        0
    );
    assert!(
        rules().contains("IRONMESH"),
        "the app flushed its pod's rules"
    );
    c.wait_for("legacy", "foo", "200/0", READY);

    // 6. Socket mark 1337: the app may set it (Linux >= 5.17 allows it with NET_RAW, as in Kubernetes),
    // but the rules exempt only uid 1337, so its traffic still goes through its sidecar (mTLS: the
    // server sees the client's certificate in X-Forwarded-Client-Cert).
    // With ISTIO_MUTUAL the sidecar's traffic is mTLS, which httpbin's answer shows.
    let rule = c.home.path().join("istio-mutual.yaml");
    std::fs::write(&rule, ISTIO_MUTUAL_EVERYWHERE).unwrap();
    c.ok(&["apply", "-f", rule.to_str().unwrap()]);
    let deadline = std::time::Instant::now() + READY;
    while !c
        .exec_in(
            "foo",
            &sleep,
            "sleep",
            &["curl", "-s", "-m", "5", "http://httpbin.foo:8000/headers"],
        )
        .stdout
        .contains("X-Forwarded-Client-Cert")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "ISTIO_MUTUAL never reached sleep.foo's sidecar"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let probe = std::env::current_exe().unwrap();
    let probe = probe.to_str().unwrap();
    let control = Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.pod_netns("foo", &sleep),
            "setpriv",
            "--reuid=1337",
            "--regid=1337",
            "--clear-groups",
            probe,
            "--exact",
            "so_mark_probe",
            "--nocapture",
        ])
        .env(MARK_PROBE, "1")
        .output()
        .unwrap();
    let control = String::from_utf8_lossy(&control.stdout).into_owned();
    assert!(
        control.contains("200 OK") && !control.contains("X-Forwarded-Client-Cert"),
        "control: traffic of uid 1337 skips the sidecar, and the probe can see it: {control}"
    );
    let ran = c.sh(
        "foo",
        &sleep,
        "sleep",
        &format!("{MARK_PROBE}=1 {probe} --exact so_mark_probe --nocapture"),
    );
    assert!(
        ran.stdout.contains("200 OK") && ran.stdout.contains("X-Forwarded-Client-Cert"),
        "the app's marked connection skipped its sidecar: {} {}",
        ran.stdout,
        ran.stderr
    );

    // 7. The API socket (delete an AuthorizationPolicy, switch the mesh to PERMISSIVE).
    let api = format!("{home}/run/api.sock");
    let control = host(&[
        "curl",
        "-s",
        "-m",
        "3",
        "-o",
        "/dev/null",
        "--unix-socket",
        &api,
        "http://localhost/",
    ]);
    assert_eq!(control.code, 0, "control: the API answers on the host");
    for (ns, pod, container) in [
        ("foo", &sleep, "sleep"),
        ("legacy", &legacy, "sleep"),
        ("foo", &sleep, "ironmesh-proxy"),
    ] {
        let ran = c.exec_in(
            ns,
            pod,
            container,
            &[
                "curl",
                "-s",
                "-m",
                "3",
                "--unix-socket",
                &api,
                "http://localhost/",
            ],
        );
        assert_eq!(ran.code, 7, "{ns}/{container} reached the API socket");
    }

    // 8. IPv6: no address at all in pods (not even link-local), and apps cannot turn it back on.
    let scratch = format!("{}probe6", c.netns_prefix());
    host(&["ip", "netns", "add", &scratch]);
    host(&["ip", "-n", &scratch, "link", "set", "lo", "up"]);
    let control = host(&["ip", "netns", "exec", &scratch, "cat", "/proc/net/if_inet6"]);
    host(&["ip", "netns", "del", &scratch]);
    let ipv6_on_host = !control.stdout.trim().is_empty();
    for (ns, pod) in [("foo", &httpbin), ("foo", &sleep), ("legacy", &legacy)] {
        let container = if pod == &httpbin { "httpbin" } else { "sleep" };
        let addresses = c.exec_in(ns, pod, container, &["cat", "/proc/net/if_inet6"]);
        assert_eq!(
            addresses.stdout.trim(),
            "",
            "{ns}/{pod} has IPv6 addresses (a fresh namespace has: {ipv6_on_host})"
        );
        let enable = c.sh(
            ns,
            pod,
            container,
            "echo 0 > /proc/sys/net/ipv6/conf/all/disable_ipv6",
        );
        assert_ne!(enable.code, 0, "{ns}/{pod} re-enabled IPv6");
    }
    if std::path::Path::new("/proc/net/if_inet6").exists() {
        assert!(
            ipv6_on_host,
            "control: a namespace of our own gets ::1 ({})",
            control.stderr
        );
    }

    // Logs keep working through the runtime.
    let logs = c.ok(&["logs", &httpbin, "-n", "foo", "-c", "ironmesh-proxy"]);
    assert!(!logs.is_empty(), "the proxy's log is empty");
}
