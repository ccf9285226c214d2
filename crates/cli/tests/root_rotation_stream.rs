//! Root only: a CA root rotation reaches running sidecars through the configuration stream. Certificates
//! live an hour here, so no sidecar renews on its own during the test: only the pushed trust bundle can
//! move them to the new root, and requests keep succeeding across `ca rotate-root` and `ca retire-root`.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const READY: Duration = Duration::from_secs(90);
/// How long every sidecar gets to move to the new root once it is pushed.
const RENEWED: Duration = Duration::from_secs(60);
/// The request loop stops on its own after this long, whatever the test does.
const LOAD_LIMIT_SECONDS: u32 = 180;

fn pems(text: &str) -> Vec<String> {
    text.split_inclusive("-----END CERTIFICATE-----")
        .map(str::trim)
        .filter(|pem| pem.starts_with("-----BEGIN CERTIFICATE-----"))
        .map(|pem| format!("{pem}\n"))
        .collect()
}

/// Whether the pod's current leaf certificate is signed by `root` (openssl, `root` the only trust anchor).
fn leaf_signed_by(c: &Cluster, pod: &str, root: &str) -> bool {
    let secret = c.ok(&["proxy-config", "secret", pod, "-n", "foo", "-o", "pem"]);
    let Some(leaf) = pems(&secret).into_iter().next() else {
        return false;
    };
    let dir = c.home.path();
    let (leaf_file, root_file) = (
        dir.join(format!("{pod}-leaf.pem")),
        dir.join("new-root.pem"),
    );
    std::fs::write(&leaf_file, leaf).unwrap();
    std::fs::write(&root_file, root).unwrap();
    Command::new("openssl")
        .args(["verify", "-CAfile"])
        .arg(&root_file)
        .arg(&leaf_file)
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn root_rotation_reaches_running_proxies_through_the_stream_without_failed_requests() {
    require_root();
    build_companions();
    let c = Cluster::up_foo_with_mutual_tls("1h", READY);
    let root_before = pems(&c.ok(&["ca", "root", "-o", "pem"]));
    assert_eq!(root_before.len(), 1);
    let pods = [c.pod("httpbin", "foo"), c.pod("sleep", "foo")];

    // A steady stream of requests, each on a new connection, until the stop file appears (or the limit).
    let stop = c.home.path().join("stop-load");
    let sleep = c.pod_netns("foo", &pods[1]);
    let load = Command::new("ip")
        .args(["netns", "exec", &sleep, "sh", "-c"])
        .arg(format!(
            "ok=0; bad=0; end=$(($(date +%s) + {LOAD_LIMIT_SECONDS})); \
             while [ ! -e {stop} ] && [ $(date +%s) -lt $end ]; do \
             c=$(curl -s -o /dev/null -m 5 -w '%{{http_code}}' http://httpbin.foo:8000/ip); \
             if [ \"$c\" = 200 ]; then ok=$((ok+1)); else bad=$((bad+1)); echo \"failed: $c\" >&2; fi; \
             sleep 0.05; done; echo \"$ok $bad\"",
            stop = stop.display()
        ))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));

    c.ok(&["ca", "rotate-root"]);
    let bundle = pems(&c.ok(&["ca", "root", "-o", "pem"]));
    assert_eq!(bundle.len(), 2, "overlap: both roots are trusted");
    let new_root = bundle
        .iter()
        .find(|pem| !root_before.contains(pem))
        .expect("a new root")
        .clone();

    // With hour-long certificates, only the pushed bundle makes the sidecars renew now (the push follows
    // the rotation so closely that there is no window to observe the old certificates in).
    let deadline = Instant::now() + RENEWED;
    while !pods.iter().all(|pod| leaf_signed_by(&c, pod, &new_root)) {
        assert!(
            Instant::now() < deadline,
            "the sidecars did not move to the new root within {RENEWED:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    c.ok(&["ca", "retire-root"]);
    assert_eq!(pems(&c.ok(&["ca", "root", "-o", "pem"])), [new_root]);
    // Traffic goes on under the new root alone (the retired bundle is pushed too).
    std::thread::sleep(Duration::from_secs(3));
    std::fs::write(&stop, "").unwrap();

    let output = load.wait_with_output().unwrap();
    let counts = String::from_utf8_lossy(&output.stdout);
    let mut numbers = counts.split_whitespace().map(|n| n.parse::<u32>().unwrap());
    let (ok, bad) = (numbers.next().unwrap(), numbers.next().unwrap());
    assert!(ok > 20, "too few requests to mean anything: {ok}");
    assert_eq!(
        bad,
        0,
        "requests failed across the rotation: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
