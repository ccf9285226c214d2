//! `ironmesh-control-plane run --kubeconfig` outside the cluster, as the tests of the control plane and
//! of the CLI run it, and the waits those tests share.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{Cluster, PATIENCE};

/// What `ironmesh install` makes cluster-wide that points at a test's control plane: with
/// `failurePolicy: Fail` its webhooks would refuse every Istio resource and every pod of a labelled
/// namespace once that control plane is gone.
const INSTALLED: [&[&str]; 4] = [
    &["mutatingwebhookconfiguration", "istio-sidecar-injector"],
    &[
        "validatingwebhookconfiguration",
        "istio-validator-istio-system",
    ],
    &["clusterrolebinding", "istiod-istio-system"],
    &["clusterrole", "istiod-istio-system"],
];

/// The control plane process on free loopback ports; on drop it is stopped (SIGTERM, then SIGKILL)
/// and the objects of [`ControlPlane::namespaces`], the install's and [`ControlPlane::also_delete`] are
/// deleted.
pub struct ControlPlane<'a> {
    pub cluster: &'a Cluster,
    pub child: Child,
    /// Where the webhooks listen (`https://127.0.0.1:{webhook_port}/validate` for `install`).
    pub webhook_port: u16,
    /// Where proxies connect (istiod's 15012).
    pub xds_port: u16,
    /// The test's namespaces, deleted first.
    pub namespaces: Vec<String>,
    /// Deleted last (`["secret", "istio-ca-secret", "-n", "istio-system"]`, ...).
    pub also_delete: Vec<Vec<String>>,
}

impl<'a> ControlPlane<'a> {
    /// Starts `binary run` against `cluster` with `home` as `IRONMESH_HOME`; its webhooks answer for
    /// 127.0.0.1 (the address the install's `--webhook-url` names).
    pub fn start(cluster: &'a Cluster, binary: &Path, home: &Path) -> ControlPlane<'a> {
        let (webhook_port, xds_port) = (free_port(), free_port());
        let child = Command::new(binary)
            .arg("run")
            .arg("--kubeconfig")
            .arg(&cluster.kubeconfig)
            .args(["--webhook-name", "127.0.0.1"])
            .args(["--webhook-address", &format!("127.0.0.1:{webhook_port}")])
            // Not the defaults 0.0.0.0:15012 and 0.0.0.0:15018: another control plane (a test beside
            // this one) may hold them.
            .args(["--xds-address", &format!("127.0.0.1:{xds_port}")])
            .args([
                "--extensions-address",
                &format!("127.0.0.1:{}", free_port()),
            ])
            .env("IRONMESH_HOME", home)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        ControlPlane {
            cluster,
            child,
            webhook_port,
            xds_port,
            namespaces: Vec::new(),
            also_delete: Vec::new(),
        }
    }

    /// The `--webhook-url` of `install` for this control plane.
    pub fn webhook_url(&self) -> String {
        format!("https://127.0.0.1:{}/validate", self.webhook_port)
    }

    /// Waits until something listens on `port`; fails if the control plane exits first.
    pub fn wait_for_port(&mut self, port: u16) {
        let deadline = Instant::now() + PATIENCE;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the control plane exited ({status}) before listening on {port}");
            }
            assert!(Instant::now() < deadline, "nothing listens on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for ControlPlane<'_> {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        for namespace in &self.namespaces {
            self.cluster
                .delete_if_present(&[&["namespace", namespace, "--wait=false"]]);
        }
        self.cluster.delete_if_present(&INSTALLED);
        for object in &self.also_delete {
            let object: Vec<&str> = object.iter().map(String::as_str).collect();
            self.cluster.delete_if_present(&[&object]);
        }
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Retries `probe` until it gives `Some` (the cluster catching up: a controller, a watch cache).
pub fn until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
