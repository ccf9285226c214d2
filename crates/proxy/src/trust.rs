//! The trust bundle pushed with the configuration: installed in the workload's certificates, which renew
//! from the new root as soon as one appears, so a CA root rotation reaches the proxy through the stream.

use std::sync::Arc;

use ironmesh_identity::WorkloadCertificates;
use tokio::sync::watch;

use crate::index::ConfigIndex;

/// Runs until the configuration channel closes; call it on the control runtime next to the config client.
pub async fn follow_trust_bundle(
    certs: WorkloadCertificates,
    mut config: watch::Receiver<Option<Arc<ConfigIndex>>>,
) {
    let mut installed = Vec::new();
    loop {
        let pushed = config
            .borrow_and_update()
            .as_ref()
            .and_then(|index| index.config())
            .map(|config| config.trust_bundle_pem.clone())
            .unwrap_or_default();
        // Empty: a control plane that sends no bundle; the CA's answers keep it current instead.
        if !pushed.is_empty() && pushed != installed {
            match certs.set_trust_bundle(&pushed) {
                Ok(()) => {
                    tracing::info!(
                        roots = pushed.len(),
                        "trust bundle from the control plane installed"
                    );
                    installed = pushed;
                }
                // Unreachable after validation (a bad bundle is NACKed); kept so the proxy never panics.
                Err(error) => {
                    tracing::error!(%error, "pushed trust bundle refused; keeping the current one")
                }
            }
        }
        if config.changed().await.is_err() {
            return;
        }
    }
}
