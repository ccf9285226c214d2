//! The proxies' gRPC endpoint: Istio's `IstioCertificateService` (certificates) and the configuration
//! stream. On the local runtime, on a Unix socket, authenticated with the pod's credential, which is
//! valid only while its pod exists in the resource source with the uid it names (Kubernetes' pod-bound
//! tokens). On Kubernetes, over TLS on TCP (istiod's 15012), authenticated with the pod's projected
//! service-account token as the API server reviews it ([`spawn_tls`]).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use ironmesh_identity::ca_service::CaService;
use ironmesh_identity::{
    CA_AUDIENCE, CertificateAuthority, CredentialAuthority, PodLookup, check_pod_binding,
};
use ironmesh_proto::{AuthError, Authenticator, ConfigHub, HubOptions};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use ironmesh_identity::TokenAuthenticator;
use ironmesh_identity::serving::{ServingCertificate, ServingLimits, tls_incoming};

use crate::ControlError;
use crate::source::{ResourceSource, SourcePods};

/// The configuration hub; a proxy may subscribe only as the pod its credential names, while that pod exists.
pub(crate) fn hub(credentials: Arc<CredentialAuthority>, pods: Arc<dyn PodLookup>) -> ConfigHub {
    ConfigHub::new(authenticator(credentials, pods), HubOptions::default())
}

fn authenticator(credentials: Arc<CredentialAuthority>, pods: Arc<dyn PodLookup>) -> Authenticator {
    Arc::new(move |token: &str, proxy_id: &str| {
        let claims = credentials
            .verify(token, CA_AUDIENCE, SystemTime::now())
            .map_err(|e| AuthError(e.to_string()))?;
        check_pod_binding(&claims, pods.as_ref()).map_err(|e| AuthError(e.to_string()))?;
        let expected = claims.proxy_id();
        if expected == proxy_id {
            Ok(())
        } else {
            Err(AuthError(format!(
                "the credential is for pod {expected}, not {proxy_id}; use the pod's own token file"
            )))
        }
    })
}

/// Starts the proxies' endpoint on `socket` for pods of `source`: the hub the controllers push through,
/// and the server task (it ends on `shutdown`). The local runtime and Kubernetes start it alike.
pub(crate) fn spawn(
    socket: PathBuf,
    ca: Arc<CertificateAuthority>,
    credentials: Arc<CredentialAuthority>,
    source: Arc<dyn ResourceSource>,
    shutdown: CancellationToken,
) -> (ConfigHub, JoinHandle<Result<(), ControlError>>) {
    let pods: Arc<dyn PodLookup> = Arc::new(SourcePods(source));
    let hub = hub(credentials.clone(), pods.clone());
    let server = tokio::spawn(serve(socket, ca, credentials, pods, hub.clone(), shutdown));
    (hub, server)
}

async fn serve(
    socket: PathBuf,
    ca: Arc<CertificateAuthority>,
    credentials: Arc<CredentialAuthority>,
    pods: Arc<dyn PodLookup>,
    hub: ConfigHub,
    shutdown: CancellationToken,
) -> Result<(), ControlError> {
    let listener = tokio::net::UnixListener::from_std(ironmesh_home::bind_unix(&socket)?).map_err(
        |source| ControlError::Home {
            path: socket.clone(),
            source,
        },
    )?;
    // Proxies run as uid/gid 1337 without capabilities (docs/SECURITY.md): they may connect (group
    // write), nobody else but root. The socket is bind-mounted into proxy containers only.
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::os::unix::fs::chown(&socket, Some(0), Some(crate::kubelet::PROXY_GID));
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o660)).map_err(
            |source| ControlError::Home {
                path: socket.clone(),
                source,
            },
        )?;
    }
    tracing::info!(socket = %socket.display(), "proxy gRPC (CA and configuration) listening");
    let result = tonic::transport::Server::builder()
        .add_service(
            CaService::new(ca, credentials)
                .bound_to_pods(pods)
                .into_server(),
        )
        .add_service(hub.service())
        // Stock gRPC clients (C-core, grpc-java) send the socket path as `:authority`.
        .serve_with_incoming_shutdown(
            ironmesh_identity::any_authority::incoming(listener),
            shutdown.cancelled(),
        )
        .await;
    let _ = std::fs::remove_file(&socket);
    result.map_err(|e| ControlError::Grpc(e.to_string()))
}

/// HTTP/2 limits of the TCP endpoint: a proxy holds one configuration stream and asks for a
/// certificate now and then; keepalives find dead peers.
const MAX_STREAMS_PER_CONNECTION: u32 = 16;
const KEEPALIVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the proxies' endpoint over TLS on `listener` (Kubernetes: istiod's 15012), presenting
/// `serving` and checking every caller's token with `auth`: the hub the controllers push through, and
/// the server task (it ends on `shutdown`).
pub(crate) fn spawn_tls(
    listener: tokio::net::TcpListener,
    ca: Arc<CertificateAuthority>,
    serving: Arc<ServingCertificate>,
    auth: Arc<dyn TokenAuthenticator>,
    shutdown: CancellationToken,
) -> (ConfigHub, JoinHandle<Result<(), ControlError>>) {
    let hub = ConfigHub::with_token_authenticator(auth.clone(), HubOptions::default());
    let service = CaService::with_authenticator(ca, auth);
    let incoming = tls_incoming(listener, serving.server_config(), ServingLimits::default());
    let server = {
        let hub = hub.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
                .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
                .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
                .add_service(service.into_server())
                .add_service(hub.service())
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled())
                .await
                .map_err(|e| ControlError::Grpc(e.to_string()))
        })
    };
    (hub, server)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ironmesh_identity::PodClaims;
    use ironmesh_store::{ApplyItem, ApplyOptions, ObjectKey, Store};

    use super::*;
    use crate::source::SourcePods;

    fn apply_pod(store: &Store) -> String {
        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "sleep-1", "namespace": "foo"},
            "spec": {"containers": [{"name": "sleep", "image": "curl"}]},
        });
        let namespace = serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "foo"}});
        let items = [namespace, pod].map(|object| ApplyItem {
            object,
            origin: "test".into(),
        });
        let applied = store.apply(&items, &ApplyOptions::default()).unwrap();
        applied[1].object["metadata"]["uid"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    #[test]
    fn the_configuration_stream_refuses_a_deleted_or_recreated_pods_credential() {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(&dir.path().join("store.redb")).unwrap());
        let pods: Arc<dyn PodLookup> = Arc::new(SourcePods(store.clone()));
        let credentials = Arc::new(CredentialAuthority::from_secret(&[5; 32]));
        let authenticate = authenticator(credentials.clone(), pods.clone());
        let token_for = |uid: &str| {
            credentials.issue(
                &PodClaims {
                    namespace: "foo".into(),
                    service_account: "default".into(),
                    pod: "sleep-1".into(),
                    pod_uid: uid.into(),
                },
                Duration::from_secs(600),
            )
        };

        assert_eq!(pods.pod_uid("foo", "sleep-1"), Ok(None));
        let uid = apply_pod(&store);
        assert_eq!(pods.pod_uid("foo", "sleep-1"), Ok(Some(uid.clone())));
        let token = token_for(&uid);
        authenticate(&token, "sleep-1.foo").unwrap();
        let other = authenticate(&token, "httpbin-1.foo").unwrap_err();
        assert!(other.0.contains("not httpbin-1.foo"), "{}", other.0);

        store
            .delete(&ObjectKey::new("pods", Some("foo"), "sleep-1"))
            .unwrap();
        let gone = authenticate(&token, "sleep-1.foo").unwrap_err();
        assert!(
            gone.0.contains("foo/sleep-1") && gone.0.contains("no longer exists"),
            "{}",
            gone.0
        );

        let new_uid = apply_pod(&store);
        assert_ne!(new_uid, uid);
        let replaced = authenticate(&token, "sleep-1.foo").unwrap_err();
        assert!(replaced.0.contains(&new_uid), "{}", replaced.0);
        authenticate(&token_for(&new_uid), "sleep-1.foo").unwrap();
    }
}
