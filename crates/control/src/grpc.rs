//! The proxies' gRPC endpoint on a Unix socket: Istio's `IstioCertificateService` (certificates) and the
//! configuration stream, both authenticated with the pod's credential.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use ironmesh_identity::ca_service::CaService;
use ironmesh_identity::{CA_AUDIENCE, CertificateAuthority, CredentialAuthority};
use ironmesh_proto::{AuthError, ConfigHub, HubOptions};
use tokio_stream::wrappers::UnixListenerStream;
use tokio_util::sync::CancellationToken;

use crate::ControlError;

/// The configuration hub; a proxy may subscribe only as the pod its credential names.
pub(crate) fn hub(credentials: Arc<CredentialAuthority>) -> ConfigHub {
    ConfigHub::new(
        Arc::new(move |token: &str, proxy_id: &str| {
            let claims = credentials
                .verify(token, CA_AUDIENCE, SystemTime::now())
                .map_err(|e| AuthError(e.to_string()))?;
            let expected = format!("{}.{}", claims.pod, claims.namespace);
            if expected == proxy_id {
                Ok(())
            } else {
                Err(AuthError(format!(
                    "the credential is for pod {expected}, not {proxy_id}; use the pod's own token file"
                )))
            }
        }),
        HubOptions::default(),
    )
}

pub(crate) async fn serve(
    socket: PathBuf,
    ca: Arc<CertificateAuthority>,
    credentials: Arc<CredentialAuthority>,
    hub: ConfigHub,
    shutdown: CancellationToken,
) -> Result<(), ControlError> {
    let _ = std::fs::remove_file(&socket);
    let listener =
        tokio::net::UnixListener::bind(&socket).map_err(|source| ControlError::Home {
            path: socket.clone(),
            source,
        })?;
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
        .add_service(CaService::new(ca, credentials).into_server())
        .add_service(hub.service())
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown.cancelled())
        .await;
    let _ = std::fs::remove_file(&socket);
    result.map_err(|e| ControlError::Grpc(e.to_string()))
}
