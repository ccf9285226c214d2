//! Processes seen through `/proc`, and the programs ironmesh runs.
#![allow(
    unsafe_code,
    reason = "the clock tick rate comes from sysconf(3) through libc"
)]

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// PATH searched when the process has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The fields of `/proc/<pid>/stat` after the command name (which may hold spaces and parentheses).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    Some(after_name.split_whitespace().map(str::to_owned).collect())
}

/// True while `pid` exists and has not exited: a zombie (`Z`, exited, not yet reaped) or a dead task
/// (`X`) counts as gone, since nothing it does any more can be waited for.
pub fn is_alive(pid: i32) -> bool {
    pid > 0
        && stat_fields(pid)
            .and_then(|fields| fields.into_iter().next())
            .is_some_and(|state| state != "Z" && state != "X")
}

/// Process start time in clock ticks since boot (`/proc/<pid>/stat` field 22): a pid plus its start time
/// names a process unambiguously, so a recycled pid is never taken for the process recorded earlier.
pub fn start_time(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// When `pid` started, in seconds since the epoch ([`start_time`] plus the boot time from `/proc/stat`).
pub fn started_at(pid: i32) -> Option<f64> {
    let ticks = start_time(pid)? as f64;
    let boot: f64 = std::fs::read_to_string("/proc/stat")
        .ok()?
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| boot + ticks / hz as f64)
}

/// Where bundled binaries live: `$IRONMESH_BIN_DIR`, else the directory of the current executable.
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("IRONMESH_BIN_DIR").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf))
}

/// Finds `program` in the bundled binaries directory, then on PATH; paths with a `/` are taken as given.
pub fn find_program(program: &str, bundled: Option<&Path>) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| OsString::from(DEFAULT_PATH));
    bundled
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::split_paths(&path))
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_has_started() {
        let me = std::process::id() as i32;
        assert!(is_alive(me));
        assert!(start_time(me).is_some());
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let started = started_at(me).unwrap();
        assert!(started <= now + 1.0, "{started} > {now}");
    }

    #[test]
    fn a_zombie_counts_as_gone() {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        // Not reaped yet: once it exits, it stays a zombie until `wait`.
        while stat_fields(pid)
            .and_then(|f| f.into_iter().next())
            .as_deref()
            != Some("Z")
        {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(!is_alive(pid));
        child.wait().unwrap();
        assert!(!is_alive(pid));
    }

    #[test]
    fn no_process_is_not_alive() {
        assert!(!is_alive(0));
        assert!(!is_alive(-1));
        assert_eq!(start_time(-1), None);
    }

    #[test]
    fn programs_are_found_in_the_bundle_first() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("ironmesh-test-program");
        std::fs::write(&program, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(
            find_program("ironmesh-test-program", Some(dir.path())),
            Some(program)
        );
        assert_eq!(find_program("ironmesh-test-program", None), None);
        assert_eq!(find_program("./x", None), Some(PathBuf::from("./x")));
        assert!(find_program("sh", None).is_some());
    }
}
