//! `ironmesh ca root|rotate-root|retire-root`: the mesh's trust bundle, and root rotation with an overlap.
//! Rotation changes the CA's files here, then tells a running control plane to re-read them (SIGHUP); its
//! chains carry the new root cross-signed by the old one until retirement, so no peer is refused meanwhile.

use ironmesh_identity::{CaOptions, CertificateAuthority, MAX_WORKLOAD_TTL};

use crate::error::CliError;
use ironmesh_home::Home;

fn ca_dir(home: &Home) -> std::path::PathBuf {
    home.ca_dir()
}

fn open(home: &Home) -> Result<CertificateAuthority, CliError> {
    let dir = ca_dir(home);
    if !dir.join("root-cert.pem").exists() && !dir.join("ca-cert.pem").exists() {
        return Err(CliError::Usage(format!(
            "no CA in {}; run `ironmesh up` first (it creates the root)",
            dir.display()
        )));
    }
    let mesh =
        ironmesh_control::options::load(home.root()).map_err(|e| CliError::Usage(e.to_string()))?;
    let options = CaOptions {
        default_workload_ttl: mesh.workload_cert_ttl(),
        max_workload_ttl: MAX_WORKLOAD_TTL,
        ..CaOptions::new(mesh.trust_domain)
    };
    CertificateAuthority::load_or_create(&dir, options).map_err(|e| CliError::Usage(e.to_string()))
}

/// `ironmesh ca root [-o pem]`: the trust bundle (every trusted root), or a summary of it.
pub(crate) fn root(home: &Home, output: Option<&str>) -> Result<(), CliError> {
    let ca = open(home)?;
    match output {
        Some("pem") => print!("{}", ca.trust_bundle_pem()),
        None | Some("wide") => {
            let roots = ca.trust_bundle_pems();
            println!("current root: {}", ca.root_fingerprint());
            println!("trusted roots: {}", roots.len());
            if roots.len() > 1 {
                println!(
                    "a rotation is in progress: run `ironmesh ca retire-root` once every workload renewed"
                );
            }
        }
        Some(other) => {
            return Err(CliError::Usage(format!(
                "unknown output format {other:?}: use -o pem, or nothing for a summary"
            )));
        }
    }
    Ok(())
}

/// Tells a running control plane to re-read the CA.
fn notify_control_plane(home: &Home) -> Result<(), CliError> {
    let Some(pid) = crate::lifecycle::control_plane_pid(home) else {
        println!("the control plane is not running; it will use the new roots when it starts");
        return Ok(());
    };
    // SAFETY: kill has no memory-safety preconditions.
    if unsafe { libc::kill(pid, libc::SIGHUP) } != 0 {
        return Err(CliError::Usage(format!(
            "cannot signal the control plane (pid {pid}): {}; restart it with `ironmesh down && ironmesh up`",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// `ironmesh ca rotate-root`: a new root; both are trusted until `retire-root`.
pub(crate) fn rotate_root(home: &Home) -> Result<(), CliError> {
    let ca = open(home)?;
    ca.rotate_root()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    notify_control_plane(home)?;
    let mesh =
        ironmesh_control::options::load(home.root()).map_err(|e| CliError::Usage(e.to_string()))?;
    println!("new root {}", ca.root_fingerprint());
    println!(
        "both roots are trusted; new certificates come from the new root. Every workload renews within {}s \
         (half its certificate lifetime); then run `ironmesh ca retire-root`",
        mesh.workload_cert_ttl().as_secs().div_ceil(2)
    );
    Ok(())
}

/// `ironmesh ca retire-root`: only the current root stays trusted.
pub(crate) fn retire_root(home: &Home) -> Result<(), CliError> {
    let ca = open(home)?;
    ca.retire_root()
        .map_err(|e| CliError::Usage(e.to_string()))?;
    notify_control_plane(home)?;
    println!("old roots retired; trusted root {}", ca.root_fingerprint());
    Ok(())
}
