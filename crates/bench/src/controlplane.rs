//! The in-process control plane the ironmesh rows need: our CA (`ironmesh-identity`) and a `ConfigHub`
//! (`ironmesh-proto`) on one Unix socket, exactly as the control plane serves proxies; plus the two
//! control-plane benchmarks: CA signings per second and push latency to many proxy streams.
#![allow(
    unsafe_code,
    reason = "the thread CPU clock is read with libc::clock_gettime"
)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hdrhistogram::Histogram;
use ironmesh_identity::ca_service::CaService;
use ironmesh_identity::{
    CA_AUDIENCE, CaOptions, CertificateAuthority, CredentialAuthority, PodClaims, SpiffeId,
    csr_for, write_token_file,
};
use ironmesh_proto::pb::ProxyConfig;
use ironmesh_proto::{
    AuthError, ConfigClient, ConfigClientOptions, ConfigHub, HubOptions, TokenSource,
};

use crate::certs::TRUST_DOMAIN;
use crate::error::{BenchError, Result};
use crate::report::{CaFigures, PushFigures};

/// CA, credentials and hub served on `socket` by a runtime owned by this value (stopped on drop).
pub struct ControlPlane {
    pub ca: Arc<CertificateAuthority>,
    pub credentials: Arc<CredentialAuthority>,
    pub hub: ConfigHub,
    pub socket: PathBuf,
    runtime: tokio::runtime::Runtime,
}

fn setup_error(what: &str, detail: impl std::fmt::Display) -> BenchError {
    BenchError::Command {
        command: format!("in-process control plane: {what}"),
        detail: detail.to_string(),
    }
}

impl ControlPlane {
    /// Creates the CA under `dir/ca` and serves CA + configuration gRPC on `dir/xds.sock`.
    pub fn start(dir: &Path) -> Result<ControlPlane> {
        ironmesh_identity::install_crypto_provider();
        let ca =
            CertificateAuthority::load_or_create(&dir.join("ca"), CaOptions::new(TRUST_DOMAIN))
                .map_err(|error| setup_error("CA", error))?;
        let ca = Arc::new(ca);
        let credentials = Arc::new(CredentialAuthority::from_secret(&rand_secret()));
        let verifier = credentials.clone();
        let hub = ConfigHub::new(
            Arc::new(move |token: &str, proxy_id: &str| {
                let claims = verifier
                    .verify(token, CA_AUDIENCE, SystemTime::now())
                    .map_err(|e| AuthError(e.to_string()))?;
                if claims.proxy_id() == proxy_id {
                    Ok(())
                } else {
                    Err(AuthError(format!("credential is not for {proxy_id}")))
                }
            }),
            HubOptions::default(),
        );
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(|error| setup_error("runtime", error))?;
        let socket = dir.join("xds.sock");
        let listener = {
            let _guard = runtime.enter();
            tokio::net::UnixListener::bind(&socket)
                .map_err(|error| setup_error("bind xds.sock", error))?
        };
        let router = tonic::transport::Server::builder()
            .add_service(CaService::new(ca.clone(), credentials.clone()).into_server())
            .add_service(hub.service());
        runtime.spawn(
            router.serve_with_incoming(tokio_stream::wrappers::UnixListenerStream::new(listener)),
        );
        Ok(ControlPlane {
            ca,
            credentials,
            hub,
            socket,
            runtime,
        })
    }

    /// Writes the pod credential for `pod.namespace` and returns its path.
    pub fn token_file(
        &self,
        dir: &Path,
        pod: &str,
        namespace: &str,
        service_account: &str,
    ) -> Result<PathBuf> {
        let claims = PodClaims {
            namespace: namespace.into(),
            service_account: service_account.into(),
            pod: pod.into(),
            pod_uid: format!("{pod}-uid"),
        };
        let path = dir.join(format!("{pod}.token"));
        write_token_file(
            &path,
            &self.credentials.issue(&claims, Duration::from_secs(3600)),
        )
        .map_err(|error| BenchError::io(&path, error))?;
        Ok(path)
    }

    /// Signed CSRs per CPU-second of one thread (closed loop), then the p99 of single signings at 1,000/s.
    pub fn bench_signing(&self, duration: Duration) -> Result<CaFigures> {
        let identity = SpiffeId::new(TRUST_DOMAIN, "bench", "ca-bench")
            .map_err(|error| setup_error("identity", error))?;
        // CSRs are made up front: the figure is the CA's cost (parse, verify, sign, encode), not the client's.
        let csrs: Vec<String> = (0..32)
            .map(|_| csr_for(&identity).map(|(csr, _)| csr))
            .collect::<std::result::Result<_, _>>()
            .map_err(|error| setup_error("CSR", error))?;
        let sign = |index: usize| {
            self.ca
                .sign_workload(
                    &csrs[index % csrs.len()],
                    &identity,
                    Duration::from_secs(3600),
                )
                .map_err(|error| setup_error("sign", error))
        };
        let cpu_start = thread_cpu_seconds();
        let end = Instant::now() + duration;
        let mut signings = 0u64;
        while Instant::now() < end {
            sign(signings as usize)?;
            signings += 1;
        }
        let cpu = (thread_cpu_seconds() - cpu_start).max(1e-9);
        // Fixed 1,000/s for a fifth of the duration, each signing timed on its own.
        let mut histogram =
            Histogram::<u64>::new_with_bounds(1, 10_000_000, 3).expect("static bounds");
        let interval = Duration::from_millis(1);
        let start = Instant::now();
        let count = (duration.as_millis() / 5).max(200) as u32;
        for index in 0..count {
            let due = start + interval * index;
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            let begun = Instant::now().max(due);
            sign(index as usize)?;
            let _ = histogram.record(begun.elapsed().as_micros().max(1) as u64);
        }
        Ok(CaFigures {
            signings,
            seconds: duration.as_secs_f64(),
            per_second_per_core: signings as f64 / cpu,
            p99_ms_at_fixed_rate: Some(histogram.value_at_quantile(0.99) as f64 / 1000.0),
        })
    }

    /// Connects `streams` in-process proxy clients, publishes a change to all of them at once and
    /// measures change → applied (the client's last-good config holds the new version) for each.
    pub fn bench_push(&self, streams: u32, timeout: Duration) -> Result<PushFigures> {
        let address: ironmesh_identity::ControlPlaneAddress =
            format!("unix://{}", self.socket.display())
                .parse()
                .map_err(|error| setup_error("socket address", error))?;
        let ids: Vec<String> = (0..streams)
            .map(|index| format!("push-{index}.bench"))
            .collect();
        let base = ProxyConfig {
            auto_mtls: true,
            ..Default::default()
        };
        for id in &ids {
            self.hub.publish(id, base.clone());
        }
        self.runtime.block_on(async {
            let mut clients = Vec::new();
            for (index, id) in ids.iter().enumerate() {
                let claims = PodClaims {
                    namespace: "bench".into(),
                    service_account: "push".into(),
                    pod: format!("push-{index}"),
                    pod_uid: format!("push-{index}-uid"),
                };
                let token =
                    TokenSource::Static(self.credentials.issue(&claims, Duration::from_secs(3600)));
                clients.push(ConfigClient::spawn(ConfigClientOptions::new(
                    address.clone(),
                    id.clone(),
                    token,
                )));
            }
            let mut receivers: Vec<_> = clients.iter().map(|client| client.config()).collect();
            let connected = tokio::time::timeout(timeout, async {
                for receiver in &mut receivers {
                    let _ = receiver.wait_for(|config| config.is_some()).await;
                }
            })
            .await;
            if connected.is_err() {
                return Err(setup_error(
                    "push",
                    format!(
                        "not all {streams} streams got their first config in {} s",
                        timeout.as_secs()
                    ),
                ));
            }
            let first_versions: Vec<String> = receivers
                .iter()
                .map(|r| {
                    r.borrow()
                        .as_ref()
                        .map(|c| c.config.version.clone())
                        .unwrap_or_default()
                })
                .collect();
            let changed = ProxyConfig {
                auto_mtls: false,
                ..base.clone()
            };
            let started = Instant::now();
            for id in &ids {
                self.hub.publish(id, changed.clone());
            }
            let waits = receivers
                .into_iter()
                .zip(first_versions)
                .map(|(mut receiver, old)| {
                    tokio::spawn(async move {
                        receiver
                            .wait_for(|config| {
                                config.as_ref().is_some_and(|c| c.config.version != old)
                            })
                            .await
                            .map(|_| started.elapsed())
                            .ok()
                    })
                });
            let waits: Vec<_> = waits.collect();
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 120_000_000, 3).expect("static bounds");
            let mut missing = 0;
            for wait in waits {
                match tokio::time::timeout(timeout, wait).await {
                    Ok(Ok(Some(elapsed))) => {
                        let _ = histogram.record(elapsed.as_micros().max(1) as u64);
                    }
                    _ => missing += 1,
                }
            }
            drop(clients);
            if missing > 0 {
                return Err(setup_error(
                    "push",
                    format!("{missing} of {streams} streams never applied the change"),
                ));
            }
            Ok(PushFigures {
                streams,
                p50_ms: histogram.value_at_quantile(0.5) as f64 / 1000.0,
                p99_ms: histogram.value_at_quantile(0.99) as f64 / 1000.0,
                max_ms: histogram.max() as f64 / 1000.0,
            })
        })
    }
}

fn rand_secret() -> Vec<u8> {
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("ironmesh-bench-{nanos}-{}", std::process::id()).into_bytes()
}

fn thread_cpu_seconds() -> f64 {
    let mut spec = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut spec) };
    spec.tv_sec as f64 + spec.tv_nsec as f64 / 1e9
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_and_push_benchmarks_measure_real_work() {
        let dir = tempfile::tempdir().unwrap();
        let control = ControlPlane::start(dir.path()).unwrap();
        let ca = control.bench_signing(Duration::from_millis(300)).unwrap();
        assert!(ca.signings > 0 && ca.per_second_per_core > 0.0, "{ca:?}");
        let push = control.bench_push(20, Duration::from_secs(20)).unwrap();
        assert_eq!(push.streams, 20);
        assert!(push.p50_ms > 0.0 && push.p50_ms <= push.max_ms, "{push:?}");
    }
}
