//! `ironmesh ca root|rotate-root|retire-root`: the mesh's trust bundle, and root rotation with an overlap.
//! The control plane owns the CA's files; these commands ask it through the API (`/v1/ca/...`), so they
//! work from wherever the API answers, without access to `ca/`. Its chains carry the new root
//! cross-signed by the old one until retirement, so no peer is refused meanwhile.

use ironmesh_store::client::ApiClient;
use ironmesh_store::wire::CaRoots;

use crate::error::CliError;

/// `ironmesh ca root [-o pem]`: the trust bundle (every trusted root), or a summary of it.
pub(crate) async fn root(client: &ApiClient, output: Option<&str>) -> Result<(), CliError> {
    if let Some(other) = output.filter(|o| !matches!(*o, "pem" | "wide")) {
        return Err(CliError::Usage(format!(
            "unknown output format {other:?}: use -o pem, or nothing for a summary"
        )));
    }
    let roots = client.ca_roots().await.map_err(CliError::refused)?;
    match output {
        Some("pem") => print!("{}", roots.trust_bundle.concat()),
        _ => {
            println!("current root: {}", roots.current_root_fingerprint);
            println!("trusted roots: {}", roots.trust_bundle.len());
            if roots.trust_bundle.len() > 1 {
                println!(
                    "a rotation is in progress: run `ironmesh ca retire-root` once every workload renewed"
                );
            }
        }
    }
    Ok(())
}

/// `ironmesh ca rotate-root`: a new root; both are trusted until `retire-root`.
pub(crate) async fn rotate_root(client: &ApiClient) -> Result<(), CliError> {
    let CaRoots {
        current_root_fingerprint,
        workload_cert_ttl_seconds,
        ..
    } = client.ca_rotate_root().await.map_err(CliError::refused)?;
    println!("new root {current_root_fingerprint}");
    println!(
        "both roots are trusted; new certificates come from the new root. Every workload renews within {}s \
         (half its certificate lifetime); then run `ironmesh ca retire-root`",
        workload_cert_ttl_seconds.max(1).div_ceil(2)
    );
    Ok(())
}

/// `ironmesh ca retire-root`: only the current root stays trusted.
pub(crate) async fn retire_root(client: &ApiClient) -> Result<(), CliError> {
    let roots = client.ca_retire_root().await.map_err(CliError::refused)?;
    println!(
        "old roots retired; trusted root {}",
        roots.current_root_fingerprint
    );
    Ok(())
}
