//! Running the host's network tools (`ip`, `iptables-restore`, `sysctl`) with errors that say what failed.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::error::{Result, RuntimeError};

fn package_of(program: &str) -> &'static str {
    match program {
        "iptables-restore" | "iptables-save" => "iptables",
        "sysctl" => "procps",
        "runc" => "runc",
        _ => "iproute2",
    }
}

/// Runs `program args…`, feeding `stdin` if given; returns stdout, or an error carrying stderr.
pub(crate) fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String> {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    let mut child = command
        .spawn()
        .map_err(|source| RuntimeError::MissingProgram {
            program: program.to_owned(),
            package: package_of(program),
            source,
        })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // A failed write shows up as the program's own error below, which is more telling.
        let _ = pipe.write_all(input.as_bytes());
    }
    let output = child
        .wait_with_output()
        .map_err(|source| RuntimeError::MissingProgram {
            program: program.to_owned(),
            package: package_of(program),
            source,
        })?;
    if !output.status.success() {
        return Err(RuntimeError::CommandFailed {
            command: format!("{program} {}", args.join(" ")),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `ip args…`.
pub(crate) fn ip(args: &[&str]) -> Result<String> {
    run("ip", args, None)
}

/// Runs `program args…` inside the named network namespace (`ip netns exec`).
pub(crate) fn in_netns(
    netns: &str,
    program: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String> {
    let mut full = vec!["netns", "exec", netns, program];
    full.extend_from_slice(args);
    run("ip", &full, stdin)
}

/// Names of every network namespace on the host (`ip netns list`).
pub(crate) fn list_netns() -> Result<Vec<String>> {
    let listing = ip(&["netns", "list"])?;
    Ok(listing
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Pids of processes living in `netns` (`ip netns pids`); empty if the namespace is gone.
pub(crate) fn netns_pids(netns: &str) -> Vec<i32> {
    ip(&["netns", "pids", netns])
        .map(|out| {
            out.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}
