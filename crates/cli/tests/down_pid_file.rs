//! `ironmesh down` with a stale pid file: the pid it names may be any process by now, so `down` signals
//! it only when it is this home's control plane (API only: `IRONMESH_NO_RUNTIME=1`, no root needed).

mod common;

use std::path::Path;
use std::process::{Child, Command};

use common::{ApiOnlyControlPlane, ironmesh_api_only as ironmesh, output_text as text};

fn write_pid_file(home: &Path, pid: u32) {
    std::fs::create_dir_all(home.join("run")).unwrap();
    std::fs::write(home.join("run/control-plane.pid"), format!("{pid}\n")).unwrap();
}

/// A process the test owns, killed on drop.
struct Owned(Child);

impl Drop for Owned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn down_leaves_an_unrelated_process_named_by_a_stale_pid_file_alone() {
    let home = tempfile::tempdir().unwrap();
    // `down` has the control plane's teardown remove the stale pid file.
    common::build_control_plane();
    let mut unrelated = Owned(Command::new("sleep").arg("300").spawn().unwrap());
    write_pid_file(home.path(), unrelated.0.id());

    let down = ironmesh(home.path(), &["down"]);
    assert!(down.status.success(), "{}", text(&down));
    let said = text(&down);
    assert!(said.contains("stale pid file"), "{said}");
    assert!(said.contains("ironmesh is not running"), "{said}");
    assert!(
        unrelated.0.try_wait().unwrap().is_none(),
        "down signalled an unrelated process: {said}"
    );
    assert!(!home.path().join("run/control-plane.pid").exists());
}

#[test]
fn down_leaves_the_control_plane_of_another_home_alone_and_stops_its_own() {
    let other = ApiOnlyControlPlane(tempfile::tempdir().unwrap());
    common::build_control_plane();
    let up = ironmesh(other.0.path(), &["up"]);
    assert!(up.status.success(), "{}", text(&up));
    let pid: u32 = std::fs::read_to_string(other.0.path().join("run/control-plane.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    // A home whose stale pid file names the other home's (live, real) control plane.
    let home = tempfile::tempdir().unwrap();
    write_pid_file(home.path(), pid);
    let down = ironmesh(home.path(), &["down"]);
    let said = text(&down);
    assert!(down.status.success(), "{said}");
    assert!(said.contains("stale pid file"), "{said}");
    assert!(said.contains("control plane of IRONMESH_HOME="), "{said}");
    let status = ironmesh(other.0.path(), &["status"]);
    assert!(
        text(&status).contains("control plane: running"),
        "the other home's control plane was stopped: {}",
        text(&status)
    );

    // Its own home's `down` still stops it.
    let down = ironmesh(other.0.path(), &["down"]);
    assert!(
        text(&down).contains(&format!("control plane stopped (pid {pid})")),
        "{}",
        text(&down)
    );
    assert!(
        !Path::new(&format!("/proc/{pid}/cmdline")).exists()
            || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|stat| stat.contains(") Z ")),
        "the control plane is still running"
    );
}
