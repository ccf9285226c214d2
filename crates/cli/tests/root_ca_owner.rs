//! ROOT ONLY (a mount namespace): `ironmesh ca rotate-root` and `retire-root` work while the CLI process
//! cannot see the CA's files. Only the control plane writes `ca/`; the CLI asks it through the API. The
//! control plane runs API-only (`IRONMESH_NO_RUNTIME=1`); the CLI runs under `unshare -m` with an empty
//! tmpfs over `ca/`.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{
    BIN, build_control_plane, ironmesh_api_only as ironmesh, output_text as text, require_root,
};

/// Runs `ironmesh ARGS` in a mount namespace of its own where `ca/` is an empty tmpfs; first proves
/// that the CA's key is out of reach there.
fn ironmesh_without_ca(home: &Path, args: &str) -> Output {
    let script = format!(
        "mount -t tmpfs none \"$IRONMESH_HOME/ca\" && ! test -e \"$IRONMESH_HOME/ca/root-key.pem\" \
         && ! ls \"$IRONMESH_HOME/ca\" | grep -q . && exec {BIN} {args}"
    );
    Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .env("IRONMESH_HOME", home)
        .env("IRONMESH_NO_RUNTIME", "1")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// Stops the control plane even when the test fails.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = ironmesh(self.0, &["down"]);
    }
}

#[test]
fn root_ca_rotation_needs_no_access_to_the_ca_files() {
    require_root();
    build_control_plane();
    let home = tempfile::tempdir().unwrap();
    let up = ironmesh(home.path(), &["up"]);
    assert!(up.status.success(), "{}", text(&up));
    let _down = Down(home.path());
    assert!(
        home.path().join("ca/root-key.pem").exists(),
        "the control plane keeps its root key under ca/"
    );
    let before = std::fs::read_to_string(home.path().join("ca/root-cert.pem")).unwrap();

    let rotated = ironmesh_without_ca(home.path(), "ca rotate-root");
    assert!(rotated.status.success(), "{}", text(&rotated));
    assert!(text(&rotated).contains("new root "), "{}", text(&rotated));

    // The control plane rewrote its files, and serves both roots.
    let after = std::fs::read_to_string(home.path().join("ca/root-cert.pem")).unwrap();
    assert_ne!(before, after, "the root on disk did not change");
    let summary = ironmesh_without_ca(home.path(), "ca root");
    assert!(summary.status.success(), "{}", text(&summary));
    assert!(
        text(&summary).contains("trusted roots: 2"),
        "{}",
        text(&summary)
    );

    let retired = ironmesh_without_ca(home.path(), "ca retire-root");
    assert!(retired.status.success(), "{}", text(&retired));
    let summary = ironmesh(home.path(), &["ca", "root"]);
    assert!(
        text(&summary).contains("trusted roots: 1"),
        "{}",
        text(&summary)
    );
}
