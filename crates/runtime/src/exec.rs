//! `ironmesh exec` and `ironmesh logs`: a command run in a pod's namespace with the terminal inherited,
//! and a container's log printed (optionally followed).

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use nix::sys::signal::{SigHandler, Signal, signal};

use crate::error::{Result, RuntimeError};
use crate::process;
use crate::supervisor::exit_code;

/// Runs `argv` in the pod's network namespace (and its hosts/resolv.conf view), with this process's
/// stdin, stdout and stderr, and returns its exit code (128 + signal if killed). `tty` only sets `TERM`
/// when missing: the caller's terminal is passed through as is.
pub fn exec(netns: &str, argv: &[String], tty: bool) -> Result<i32> {
    exec_with_env(netns, argv, tty, &[])
}

/// [`exec`] with extra environment variables (e.g. the container's), added to the caller's.
pub fn exec_with_env(
    netns: &str,
    argv: &[String],
    tty: bool,
    env: &[(String, String)],
) -> Result<i32> {
    let Some((program, args)) = argv.split_first() else {
        return Err(RuntimeError::EmptyCommand);
    };
    let bundled = process::bin_dir();
    // Resolve here so the bundled binaries (ironmesh-proxy, ironmesh-httpbin) are found like in containers;
    // unknown names are left to execvp inside the namespace, which prints the usual "not found".
    let resolved = process::find_program(program, bundled.as_deref())
        .map(|p| p.into_os_string())
        .unwrap_or_else(|| program.into());
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", netns])
        .arg(resolved)
        .args(args);
    command.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    if tty && std::env::var_os("TERM").is_none() {
        command.env("TERM", "xterm");
    }
    // Like system(3): while the command owns the terminal, Ctrl-C and Ctrl-\ are for it, not for us.
    // Ignored dispositions survive exec, so the child gets the defaults back first.
    // SAFETY: installing SIG_IGN/SIG_DFL runs no handler code; the pre_exec closure only calls the
    // async-signal-safe sigaction.
    let previous = unsafe { ignore_interactive_signals() };
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
        program: "ip".into(),
        package: "iproute2",
        source,
    })?;
    Ok(exit_code(Some(status)).0)
}

type SavedHandlers = [(Signal, Option<SigHandler>); 2];

unsafe fn ignore_interactive_signals() -> SavedHandlers {
    let mut saved = [(Signal::SIGINT, None), (Signal::SIGQUIT, None)];
    for (sig, previous) in saved.iter_mut() {
        *previous = unsafe { signal(*sig, SigHandler::SigIgn) }.ok();
    }
    saved
}

unsafe fn restore_signals(saved: SavedHandlers) {
    for (sig, previous) in saved {
        if let Some(handler) = previous {
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
    let mut position = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| RuntimeError::io("read", &path, e))?;
        if read > 0 {
            position += read as u64;
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
        // A truncated log (rotated by hand) starts over instead of waiting past its end forever.
        let length = file.metadata().map(|m| m.len()).unwrap_or(position);
        if length < position {
            position = file
                .seek(SeekFrom::Start(0))
                .map_err(|e| RuntimeError::io("seek", &path, e))?;
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
