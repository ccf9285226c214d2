//! The hub and the client together, in-process over a Unix socket: push, NACK, reconnect, resend.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ironmesh_proto::pb::{Endpoint, ProxyConfig, Service, ServicePort};
use ironmesh_proto::{
    AuthError, CompiledConfig, ConfigClient, ConfigClientOptions, ConfigHub, HubOptions,
    TokenSource,
};
use tokio::sync::{oneshot, watch};

const PROXY: &str = "httpbin-1.foo";

fn hub() -> ConfigHub {
    let authenticator = Arc::new(|token: &str, proxy_id: &str| {
        if token == format!("token-for-{proxy_id}") {
            Ok(())
        } else {
            Err(AuthError("bad token".into()))
        }
    });
    ConfigHub::new(
        authenticator,
        HubOptions {
            debounce: Duration::from_millis(20),
        },
    )
}

fn config(endpoint_ip: &str) -> ProxyConfig {
    ProxyConfig {
        services: vec![Service {
            hostname: "httpbin.foo.svc.cluster.local".into(),
            vip: "10.96.0.10".into(),
            ports: vec![ServicePort {
                port: 8000,
                target_port: 80,
                ..Default::default()
            }],
            endpoints: vec![Endpoint {
                ip: endpoint_ip.into(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A hub server on its own runtime and thread, so that killing it drops every connection like a crashed process.
struct Server {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Server {
    fn start(hub: &ConfigHub, path: &Path) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let hub = hub.clone();
        let path = path.to_path_buf();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                tokio::spawn(async move {
                    hub.serve_unix(&path, std::future::pending())
                        .await
                        .expect("hub serves")
                });
                let _ = stopped.await;
            });
            // Dropping the runtime here cancels the server and every stream task.
        });
        Self {
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn kill(mut self) {
        drop(self.stop.take());
        self.thread.take().unwrap().join().unwrap();
    }
}

fn client(path: PathBuf, token: &str) -> ConfigClient {
    let mut options = ConfigClientOptions::new(
        ironmesh_identity::ControlPlaneAddress::Unix(path),
        PROXY,
        TokenSource::Static(token.into()),
    );
    options.backoff_initial = Duration::from_millis(20);
    options.backoff_max = Duration::from_millis(200);
    ConfigClient::spawn(options)
}

async fn wait_for<T: Clone>(
    receiver: &mut watch::Receiver<T>,
    what: &str,
    ok: impl Fn(&T) -> bool,
) -> T {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let value = receiver.borrow_and_update().clone();
            if ok(&value) {
                return value;
            }
            receiver.changed().await.expect("sender alive");
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn wait_status(
    hub: &ConfigHub,
    what: &str,
    ok: impl Fn(&ironmesh_proto::ProxyStatus) -> bool,
) {
    for _ in 0..500 {
        if hub.status(PROXY).is_some_and(|status| ok(&status)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "timed out waiting for {what}; status {:?}",
        hub.status(PROXY)
    );
}

fn first_endpoint(config: &Option<Arc<CompiledConfig>>) -> Option<String> {
    config
        .as_ref()
        .map(|config| config.config.services[0].endpoints[0].ip.clone())
}

#[tokio::test]
async fn pushes_nacks_and_reconnects_with_the_known_version() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("xds.sock");
    let hub = hub();
    hub.publish(PROXY, config("10.0.0.5"));
    let server = Server::start(&hub, &socket);

    let client = client(socket.clone(), "token-for-httpbin-1.foo");
    let mut configs = client.config();
    let first = wait_for(&mut configs, "first config", |c| c.is_some()).await;
    assert_eq!(first_endpoint(&first).as_deref(), Some("10.0.0.5"));
    let first_version = first.unwrap().config.version.clone();
    wait_status(&hub, "ack of the first push", |s| {
        s.acked_version.as_deref() == Some(&first_version)
    })
    .await;
    assert!(hub.status(PROXY).unwrap().last_push_latency.is_some());

    // A bad resource is refused by name and the last good state is kept.
    hub.publish(PROXY, config("not-an-ip"));
    wait_status(&hub, "nack", |s| s.last_nack.is_some()).await;
    let (_, resource, _) = hub.status(PROXY).unwrap().last_nack.unwrap();
    assert_eq!(
        resource,
        "service/httpbin.foo.svc.cluster.local/endpoint/not-an-ip"
    );
    assert_eq!(
        first_endpoint(&configs.borrow()).as_deref(),
        Some("10.0.0.5")
    );

    // A good update applies.
    hub.publish(PROXY, config("10.0.0.6"));
    wait_for(&mut configs, "second config", |c| {
        first_endpoint(c).as_deref() == Some("10.0.0.6")
    })
    .await;
    wait_status(&hub, "ack of the second push", |s| {
        s.acked_version != Some(first_version.clone())
    })
    .await;
    let pushes_before = hub.status(PROXY).unwrap().pushes;

    // The control plane dies: the client keeps its config.
    let mut connected = client.connected();
    server.kill();
    wait_for(&mut connected, "disconnect", |c| !*c).await;
    assert_eq!(
        first_endpoint(&configs.borrow()).as_deref(),
        Some("10.0.0.6")
    );

    // It comes back with the same state: the client reconnects on its own and the identical push is skipped.
    let server = Server::start(&hub, &socket);
    wait_for(&mut connected, "reconnect", |c| *c).await;
    wait_status(&hub, "stream after reconnect", |s| s.streams == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        hub.status(PROXY).unwrap().pushes,
        pushes_before,
        "identical push skipped on reconnect"
    );

    // A restarted control plane with fresh state computes the same content version: still no push.
    server.kill();
    wait_for(&mut connected, "disconnect", |c| !*c).await;
    let fresh = self::hub();
    fresh.publish(PROXY, config("10.0.0.6"));
    let _server = Server::start(&fresh, &socket);
    wait_for(&mut connected, "reconnect to a fresh hub", |c| *c).await;
    wait_status(&fresh, "reconnect seen by fresh hub", |s| {
        s.acked_version.is_some()
    })
    .await;
    assert_eq!(fresh.status(PROXY).unwrap().pushes, 0);
}

#[tokio::test]
async fn a_wrong_token_is_refused_and_gets_no_config() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("xds.sock");
    let hub = hub();
    hub.publish(PROXY, config("10.0.0.5"));
    let _server = Server::start(&hub, &socket);
    let client = client(socket, "token-for-someone-else");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(client.config().borrow().is_none());
    assert_eq!(hub.status(PROXY).unwrap().pushes, 0);
}

#[tokio::test]
async fn a_burst_of_publishes_is_debounced_into_few_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("xds.sock");
    let hub = hub();
    hub.publish(PROXY, config("10.0.0.1"));
    let _server = Server::start(&hub, &socket);
    let client = client(socket, "token-for-httpbin-1.foo");
    let mut configs = client.config();
    wait_for(&mut configs, "first config", |c| c.is_some()).await;
    for last_octet in 2..=50 {
        hub.publish(PROXY, config(&format!("10.0.0.{last_octet}")));
    }
    wait_for(&mut configs, "last config", |c| {
        first_endpoint(c).as_deref() == Some("10.0.0.50")
    })
    .await;
    let pushes = hub.status(PROXY).unwrap().pushes;
    assert!(pushes <= 3, "49 publishes in a burst gave {pushes} pushes");
}
