//! `up`, `down`, `status` and the hidden `control-plane` command: `up` starts the `ironmesh-control-plane`
//! binary in the background, `control-plane` becomes it in the foreground.
#![allow(
    unsafe_code,
    reason = "geteuid, setsid in pre_exec and kill on our own control plane go through libc"
)]

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ironmesh_api::mesh::MeshOptions;
use ironmesh_store::client::ApiClient;

use crate::cli::UpArgs;
use crate::error::CliError;
use ironmesh_home::Home;

/// The control plane's own binary (crates/control).
const CONTROL_PLANE: &str = "ironmesh-control-plane";
/// How long `up` waits for the API socket to answer.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// How long `down` waits for the control plane to exit before signalling it.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Parses `24h`, `90m`, `1h30m`, `3600s`, `7d`.
pub(crate) fn parse_duration(text: &str) -> Result<u64, CliError> {
    let bad = || {
        CliError::Usage(format!(
            "invalid duration {text:?}: write it like 24h, 90m, 1h30m or 3600s"
        ))
    };
    let mut total = 0u64;
    let mut number = String::new();
    for c in text.trim().chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        let n: u64 = number.parse().map_err(|_| bad())?;
        total += n * unit;
        number.clear();
    }
    if !number.is_empty() || total == 0 {
        return Err(bad());
    }
    Ok(total)
}

/// The control plane runs from its own directory; relative CA paths must not depend on ours.
fn absolute(path: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

fn runtime() -> Result<tokio::runtime::Runtime, CliError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Usage(format!("cannot start the async runtime: {e}")))
}

fn answers(home: &Home) -> Option<ironmesh_store::wire::ServerInfo> {
    let client = ApiClient::new(&home.api_socket());
    runtime().ok()?.block_on(client.info()).ok()
}

fn create_dirs(home: &Home) -> Result<(), CliError> {
    home.create_dirs()
        .map_err(|e| CliError::Usage(e.to_string()))
}

pub(crate) fn up(home: &Home, args: &UpArgs) -> Result<(), CliError> {
    let options = MeshOptions {
        trust_domain: args.trust_domain.clone(),
        auto_mtls: args.auto_mtls,
        workload_cert_ttl_seconds: parse_duration(&args.workload_cert_ttl)?,
        ca_cert: args.ca_cert.as_ref().map(|p| absolute(p)),
        ca_key: args.ca_key.as_ref().map(|p| absolute(p)),
        ca_chain: args.ca_chain.as_ref().map(|p| absolute(p)),
        ca_root: args.ca_root.as_ref().map(|p| absolute(p)),
        outbound_traffic_policy: args.outbound_traffic_policy,
    };
    for file in [&args.ca_cert, &args.ca_key, &args.ca_chain, &args.ca_root]
        .into_iter()
        .flatten()
    {
        if !file.is_file() {
            return Err(CliError::Usage(format!(
                "plug-in CA file {} does not exist; pass the paths of your CA's PEM files",
                file.display()
            )));
        }
    }
    // The local runtime (network namespaces, iptables) needs root; the API alone does not.
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root && std::env::var_os("IRONMESH_NO_RUNTIME").is_none() {
        return Err(CliError::Usage(
            "ironmesh up needs root: the local runtime creates network namespaces, veth links and \
             iptables rules. Run it with sudo, or set IRONMESH_NO_RUNTIME=1 to run only the control \
             plane and its API"
                .into(),
        ));
    }
    create_dirs(home)?;
    if let Some(info) = answers(home) {
        println!("ironmesh is already up (control plane pid {})", info.pid);
        return Ok(());
    }
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.log_file())
        .map_err(|e| CliError::Usage(format!("cannot open {}: {e}", home.log_file().display())))?;
    let mut command = Command::new(control_plane_program()?);
    // The options go to the control plane, which keeps them (mesh.json is its file alone).
    command
        .args(["run", "--local", "--mesh-stdin"])
        .env("IRONMESH_HOME", home.root())
        .stdin(Stdio::piped())
        .stdout(
            log.try_clone()
                .map_err(|e| CliError::Usage(e.to_string()))?,
        )
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the control plane from our terminal and
    // process group so it outlives this command and ignores the terminal's Ctrl-C.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| CliError::Usage(format!("cannot start the control plane: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let json = serde_json::to_vec(&options).unwrap_or_default();
        // A control plane that died at once is reported below with its log.
        let _ = stdin.write_all(&json);
    }
    let started = Instant::now();
    while started.elapsed() < START_TIMEOUT {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(CliError::Usage(format!(
                "the control plane exited at start ({status}); see {}:\n{}",
                home.log_file().display(),
                log_tail(home)
            )));
        }
        if answers(home).is_some() {
            println!(
                "control plane started (pid {}), API on {}",
                child.id(),
                home.api_socket().display()
            );
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(CliError::Usage(format!(
        "the control plane (pid {}) did not answer on {} within {}s; see {}",
        child.id(),
        home.api_socket().display(),
        START_TIMEOUT.as_secs(),
        home.log_file().display()
    )))
}

fn log_tail(home: &Home) -> String {
    let text = std::fs::read_to_string(home.log_file()).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

use ironmesh_home::is_alive as alive;

fn wait_gone(pid: i32, timeout: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < timeout {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    !alive(pid)
}

/// Why the process a pid file names is not taken for this home's control plane.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum NotOurs {
    /// `/proc/<pid>/cmdline` is not `ironmesh-control-plane` (nor the older `ironmesh control-plane`).
    Command(String),
    /// It started after the pid file was written: the pid was reused by a later process.
    StartedLater,
    /// It is the control plane of another `IRONMESH_HOME`.
    OtherHome(String),
}

impl std::fmt::Display for NotOurs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotOurs::Command(command) => {
                write!(f, "it runs {command:?}, not `ironmesh-control-plane`")
            }
            NotOurs::StartedLater => write!(
                f,
                "it started after the pid file was written (a reused pid)"
            ),
            NotOurs::OtherHome(home) => {
                write!(f, "it is the control plane of IRONMESH_HOME={home}")
            }
        }
    }
}

/// Whether `pid` is the control plane this home's pid file was written for: its command line is
/// `ironmesh-control-plane` (or the older `ironmesh control-plane`), it started before the pid file was
/// written (so the pid was not reused since; the control plane writes the file after it started),
/// and, when its environment is readable, its IRONMESH_HOME is this home.
pub(crate) fn check_control_plane(home: &Home, pid: i32) -> Result<(), NotOurs> {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let args: Vec<String> = cmdline
        .split(|byte| *byte == 0)
        .filter(|arg| !arg.is_empty())
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect();
    let program = args
        .first()
        .and_then(|arg| std::path::Path::new(arg).file_name())
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ours = program == CONTROL_PLANE
        || (program.starts_with("ironmesh")
            && args.get(1).map(String::as_str) == Some("control-plane"));
    if !ours {
        return Err(NotOurs::Command(args.join(" ")));
    }
    let written = std::fs::metadata(home.pid_file())
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs_f64());
    if let (Some(started), Some(written)) = (ironmesh_home::started_at(pid), written)
        && started > written
    {
        return Err(NotOurs::StartedLater);
    }
    if let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) {
        let theirs = environ
            .split(|byte| *byte == 0)
            .find_map(|var| var.strip_prefix(b"IRONMESH_HOME="))
            .map(|value| std::path::PathBuf::from(String::from_utf8_lossy(value).into_owned()))
            .unwrap_or_else(|| ironmesh_home::DEFAULT_HOME.into());
        // A relative IRONMESH_HOME is relative to where that process runs.
        let theirs = match std::fs::read_link(format!("/proc/{pid}/cwd")) {
            Ok(cwd) if theirs.is_relative() => cwd.join(theirs),
            _ => theirs,
        };
        let same =
            |path: &std::path::Path| std::fs::canonicalize(path).unwrap_or_else(|_| absolute(path));
        if same(&theirs) != same(home.root()) {
            return Err(NotOurs::OtherHome(theirs.display().to_string()));
        }
    }
    Ok(())
}

/// The control plane's pid: the one the API reports, or the pid file's if it passes
/// [`check_control_plane`]. A stale pid file is reported and never signalled: its pid may name any process.
pub(crate) fn control_plane_pid(home: &Home) -> Option<i32> {
    if let Some(info) = answers(home) {
        return Some(info.pid as i32);
    }
    let pid = home.read_pid()?;
    if !alive(pid) {
        return None;
    }
    match check_control_plane(home, pid) {
        Ok(()) => Some(pid),
        Err(why) => {
            eprintln!(
                "warning: ignoring the stale pid file {} (pid {pid}): {why}",
                home.pid_file().display()
            );
            None
        }
    }
}

pub(crate) fn down(home: &Home, purge: bool) -> Result<(), CliError> {
    match control_plane_pid(home) {
        Some(pid) if alive(pid) => {
            let client = ApiClient::new(&home.api_socket());
            let asked = runtime()?.block_on(client.shutdown()).is_ok();
            if !asked || !wait_gone(pid, STOP_TIMEOUT) {
                // SAFETY: kill with the pid of our control plane (checked above) has no memory effects.
                unsafe { libc::kill(pid, libc::SIGTERM) };
                if !wait_gone(pid, Duration::from_secs(5)) {
                    // SAFETY: as above.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    wait_gone(pid, Duration::from_secs(5));
                }
            }
            println!("control plane stopped (pid {pid})");
        }
        _ => println!("ironmesh is not running"),
    }
    // The control plane's own files (pid file, sockets) left by a crash are its teardown's to remove.
    remove_leftovers(home);
    if purge && home.root().exists() {
        std::fs::remove_dir_all(home.root()).map_err(|e| {
            CliError::Usage(format!("cannot remove {}: {e}", home.root().display()))
        })?;
        println!("state removed: {}", home.root().display());
    }
    Ok(())
}

/// A control plane that died (kill -9, a crash) leaves its pods and their network namespaces behind;
/// `down` has the control plane's `teardown` remove them too, so it always leaves nothing of the cluster
/// running.
fn remove_leftovers(home: &Home) {
    if !home.root().exists() {
        return;
    }
    let program = match control_plane_program() {
        Ok(program) => program,
        Err(error) => return eprintln!("warning: {error}"),
    };
    // Its own message (on its stderr, which is ours) says what failed.
    let _ = Command::new(program)
        .arg("teardown")
        .env("IRONMESH_HOME", home.root())
        .stdin(Stdio::null())
        .status();
}

/// `ironmesh install`: the control plane's binary builds and applies the manifests (it links the
/// Kubernetes client; the CLI stays a client of our API only). Its output and errors are ours.
pub(crate) fn install(args: &crate::cli::InstallArgs) -> Result<(), CliError> {
    let mut command = Command::new(control_plane_program()?);
    command.arg("install").stdin(Stdio::null());
    if let Some(kubeconfig) = &args.kubeconfig {
        command.arg("--kubeconfig").arg(kubeconfig);
    }
    if args.dry_run {
        command.arg("--dry-run");
    }
    if let Some(image) = &args.image {
        command.arg("--image").arg(image);
    }
    if let Some(url) = &args.webhook_url {
        command.arg("--webhook-url").arg(url);
    }
    if let Some(endpoint) = &args.aggregated_api_endpoint {
        command.arg("--aggregated-api-endpoint").arg(endpoint);
    }
    let status = command
        .status()
        .map_err(|e| CliError::Usage(format!("cannot run {CONTROL_PLANE} install: {e}")))?;
    match status.code() {
        Some(0) => Ok(()),
        Some(code) => Err(CliError::Exit(code)),
        None => Err(CliError::Usage(format!(
            "{CONTROL_PLANE} install was killed ({status})"
        ))),
    }
}

/// The `ironmesh-control-plane` binary: next to this one (or in `$IRONMESH_BIN_DIR`), else on PATH.
fn control_plane_program() -> Result<std::path::PathBuf, CliError> {
    ironmesh_home::find_program(CONTROL_PLANE, ironmesh_home::bin_dir().as_deref()).ok_or_else(|| {
        CliError::Usage(format!(
            "cannot find the {CONTROL_PLANE} binary next to ironmesh or on PATH; install it with the other \
             binaries (scripts/demo.sh), or build it with `cargo build -p ironmesh-control`"
        ))
    })
}

pub(crate) fn status(home: &Home) -> Result<(), CliError> {
    match answers(home) {
        Some(info) => {
            println!("control plane: running (pid {})", info.pid);
            println!("api:           {}", home.api_socket().display());
            println!(
                "store:         {} ({} objects, resourceVersion {})",
                info.store_path, info.objects, info.resource_version
            );
            if let Some(pods) = pod_summary(home) {
                println!("pods:          {pods}");
            }
            if let Some(options) = mesh_options(home) {
                println!(
                    "mesh:          trust domain {}, auto mTLS {}, workload certificate TTL {}s",
                    options.trust_domain,
                    if options.auto_mtls { "on" } else { "off" },
                    options.workload_cert_ttl_seconds
                );
            }
        }
        None => println!("control plane: not running (start it with `ironmesh up`)"),
    }
    Ok(())
}

/// The mesh options the control plane runs with, if the API answers.
fn mesh_options(home: &Home) -> Option<MeshOptions> {
    let client = ApiClient::new(&home.api_socket());
    runtime().ok()?.block_on(client.mesh()).ok()
}

/// `3 running, 1 pending` over every namespace, if the API answers.
fn pod_summary(home: &Home) -> Option<String> {
    let client = ApiClient::new(&home.api_socket());
    let pods = runtime()
        .ok()?
        .block_on(client.list(Some("pods"), None, None))
        .ok()?;
    if pods.items.is_empty() {
        return Some("none".into());
    }
    let mut phases: std::collections::BTreeMap<String, usize> = Default::default();
    for pod in &pods.items {
        let phase = pod
            .pointer("/status/phase")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("Pending")
            .to_ascii_lowercase();
        *phases.entry(phase).or_default() += 1;
    }
    Some(
        phases
            .iter()
            .map(|(phase, n)| format!("{n} {phase}"))
            .collect::<Vec<_>>()
            .join(", "),
    )
}

/// `ironmesh control-plane`: becomes the control plane (exec), in the foreground.
pub(crate) fn control_plane(home: &Home) -> Result<(), CliError> {
    let error = Command::new(control_plane_program()?)
        .arg("run")
        .env("IRONMESH_HOME", home.root())
        .exec();
    Err(CliError::Usage(format!(
        "cannot run the control plane {CONTROL_PLANE}: {error}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("24h").unwrap(), 86400);
        assert_eq!(parse_duration("1h30m").unwrap(), 5400);
        assert_eq!(parse_duration("90s").unwrap(), 90);
        assert_eq!(parse_duration("7d").unwrap(), 7 * 86400);
        for bad in ["", "24", "h", "1x", "0s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }
}
