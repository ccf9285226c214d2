//! `ironmesh exec` and `ironmesh logs`: a command run inside a running container (`runc exec`: its
//! namespaces, user, capabilities, seccomp profile and no_new_privileges, as `kubectl exec`), and a
//! container's log printed (optionally followed across rotations).
#![allow(
    unsafe_code,
    reason = "signal dispositions around an interactive child are set with sigaction"
)]

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{SigHandler, Signal, signal};

use crate::error::{Result, RuntimeError};
use crate::names::ClusterId;
use crate::process;
use crate::supervisor::exit_code;

/// Runs `argv` in container `container` of pod `namespace/pod` of the cluster at `home`, with this
/// process's stdin, stdout and stderr, and returns its exit code (128 + signal if killed). With `tty`,
/// runc gives the command a terminal (pass it only when stdin is one).
pub fn exec(
    home: &Path,
    namespace: &str,
    pod: &str,
    container: &str,
    argv: &[String],
    tty: bool,
) -> Result<i32> {
    if argv.is_empty() {
        return Err(RuntimeError::EmptyCommand);
    }
    let cluster = ClusterId::from_home(home)?;
    let id = crate::runc::container_id(&cluster.pod_netns(namespace, pod), container);
    let mut env = Vec::new();
    if tty {
        env.push((
            "TERM".to_owned(),
            std::env::var("TERM").unwrap_or_else(|_| "xterm".into()),
        ));
    }
    let mut command = crate::runc::exec(&cluster, &id, argv, tty, &env)?;
    // Like system(3): while the command owns the terminal, Ctrl-C and Ctrl-\ are for it, not for us.
    // Ignored dispositions survive exec, so the child gets the defaults back first.
    // SAFETY: installing SIG_IGN/SIG_DFL runs no handler code; the pre_exec closure only calls the
    // async-signal-safe sigaction.
    let previous = unsafe { ignore_interactive_signals() };
    // SAFETY: the pre_exec closure runs between fork and exec and only calls sigaction.
    unsafe {
        command.pre_exec(|| {
            let _ = signal(Signal::SIGINT, SigHandler::SigDfl);
            let _ = signal(Signal::SIGQUIT, SigHandler::SigDfl);
            Ok(())
        });
    }
    let status = command.status();
    // SAFETY: puts back exactly the handlers that were installed before.
    unsafe { restore_signals(previous) };
    let status = status.map_err(|source| RuntimeError::MissingProgram {
        program: "runc".into(),
        package: "runc",
        source,
    })?;
    Ok(exit_code(Some(status)).0)
}

type SavedHandlers = [(Signal, Option<SigHandler>); 2];

unsafe fn ignore_interactive_signals() -> SavedHandlers {
    let mut saved = [(Signal::SIGINT, None), (Signal::SIGQUIT, None)];
    for (sig, previous) in saved.iter_mut() {
        // SAFETY: SIG_IGN installs no handler code; the caller restores the previous disposition.
        *previous = unsafe { signal(*sig, SigHandler::SigIgn) }.ok();
    }
    saved
}

unsafe fn restore_signals(saved: SavedHandlers) {
    for (sig, previous) in saved {
        if let Some(handler) = previous {
            // SAFETY: the disposition that was installed before ignore_interactive_signals ran.
            let _ = unsafe { signal(sig, handler) };
        }
    }
}

/// Copies the container's log to `out`; with `follow`, keeps copying what is appended until writing to
/// `out` fails (e.g. the reader went away) or `keep_following` returns false (checked every 200 ms).
pub fn logs(
    pod_dir: &Path,
    container: &str,
    follow: bool,
    out: &mut dyn Write,
    keep_following: &dyn Fn() -> bool,
) -> Result<()> {
    let path = process::log_path(pod_dir, container);
    let mut file =
        std::fs::File::open(&path).map_err(|e| RuntimeError::io("open the log", &path, e))?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| RuntimeError::io("read", &path, e))?;
        if read > 0 {
            if out.write_all(&buffer[..read]).is_err() {
                return Ok(());
            }
            continue;
        }
        if !follow {
            return Ok(());
        }
        if out.flush().is_err() || !keep_following() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
        // Rotated (renamed away, a new file in its place): finish the old one, then go on with the new.
        let current = std::fs::metadata(&path).map(|m| m.ino()).ok();
        let open = file.metadata().map(|m| m.ino()).ok();
        if current.is_some() && current != open {
            let mut rest = Vec::new();
            let _ = file.read_to_end(&mut rest);
            if out.write_all(&rest).is_err() {
                return Ok(());
            }
            file = std::fs::File::open(&path)
                .map_err(|e| RuntimeError::io("open the log", &path, e))?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn logs_prints_and_follows_appends() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("logs")).unwrap();
        let path = process::log_path(dir.path(), "app");
        std::fs::write(&path, "line 1\n").unwrap();
        let mut out = Vec::new();
        logs(dir.path(), "app", false, &mut out, &|| true).unwrap();
        assert_eq!(out, b"line 1\n");

        let polls = AtomicUsize::new(0);
        let mut followed = Vec::new();
        let appender = {
            let path = path.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
                file.write_all(b"line 2\n").unwrap();
            })
        };
        logs(dir.path(), "app", true, &mut followed, &|| {
            polls.fetch_add(1, Ordering::SeqCst) < 5
        })
        .unwrap();
        appender.join().unwrap();
        assert_eq!(followed, b"line 1\nline 2\n");
        assert!(logs(dir.path(), "missing", false, &mut Vec::new(), &|| true).is_err());
    }
}
