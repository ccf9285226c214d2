//! The runtime's error type: every message says what to do next.

use std::io;
use std::path::PathBuf;

/// Errors from the local runtime's mechanisms.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A path of the home could not be created or resolved.
    #[error(transparent)]
    Home(#[from] ironmesh_home::HomeError),
    /// A helper program (`ip`, `iptables-restore`, `sysctl`, `runc`) ran and failed. The hint names root
    /// only when the process is not root: as root the program's own stderr is the cause.
    #[error("`{command}` failed ({status}): {stderr}{}", not_root_hint())]
    CommandFailed {
        command: String,
        status: String,
        stderr: String,
    },
    /// A helper program could not be started at all.
    #[error(
        "cannot run `{program}`: {source}; install the `{package}` package (apt-get install {package})"
    )]
    MissingProgram {
        program: String,
        package: &'static str,
        source: io::Error,
    },
    /// A file or directory under `$IRONMESH_HOME` or `/etc/netns` could not be read or written.
    #[error("{action} {path}: {source}; check that the path exists and is writable by root")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// The address pool has no free address left.
    #[error("no free address left in {range}: delete unused pods or services")]
    PoolExhausted { range: String },
    /// An address was requested that does not belong to the pool.
    #[error("{ip} is not in {range}: pick an address from that range")]
    OutOfRange {
        ip: std::net::Ipv4Addr,
        range: String,
    },
    /// An address is already held by someone else.
    #[error("{ip} is already allocated to {owner}: release it first or pick another")]
    AddressTaken {
        ip: std::net::Ipv4Addr,
        owner: String,
    },
    /// A container cannot be launched from its spec (no command and not a bundled sample image).
    #[error(
        "container {container}: image {image:?} is not a bundled sample and the container has no `command:`; \
         give it a command or use an image naming a sample (httpbin)"
    )]
    UnknownImage { container: String, image: String },
    /// A container's `command[0]` was found neither in the bundled binaries directory nor on PATH.
    #[error(
        "container {container}: executable {program:?} not found in {searched}; install it or fix `command:`"
    )]
    ExecutableNotFound {
        container: String,
        program: String,
        searched: String,
    },
    /// `exec` into a container that runc does not know (not started yet, or exited).
    #[error(
        "container {container} is not running; check `ironmesh get pods` and `ironmesh describe pod`"
    )]
    ContainerNotRunning { container: String },
    /// `exec` was asked to run nothing.
    #[error("exec needs a command: pass it after `--`")]
    EmptyCommand,
}

/// The advice appended to a failed command when the process lacks root, empty otherwise.
fn not_root_hint() -> &'static str {
    if nix::unistd::geteuid().is_root() {
        ""
    } else {
        "; the local runtime needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN): run it with sudo"
    }
}

impl RuntimeError {
    pub(crate) fn io(action: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        RuntimeError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_command_names_root_only_when_not_root() {
        let message = RuntimeError::CommandFailed {
            command: "ip link add x".into(),
            status: "exit status: 2".into(),
            stderr: "RTNETLINK answers: File exists".into(),
        }
        .to_string();
        assert!(message.starts_with(
            "`ip link add x` failed (exit status: 2): RTNETLINK answers: File exists"
        ));
        assert_eq!(
            message.contains("needs root"),
            !nix::unistd::geteuid().is_root(),
            "{message}"
        );
    }
}
