//! The harness's error type: every variant says what failed and what to do about it.

use std::path::PathBuf;

/// Why a benchmark step failed.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// A system command (ip, iptables, a peer proxy) could not be started or exited non-zero.
    #[error(
        "`{command}` failed: {detail}; run the harness as root with bench/install-deps.sh applied"
    )]
    Command { command: String, detail: String },
    /// A required tool is not installed.
    #[error("`{tool}` is not installed; run bench/install-deps.sh (or apt-get install {package})")]
    MissingTool { tool: String, package: String },
    /// A file could not be read or written.
    #[error("cannot access {path}: {source}; check the results directory is writable")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// A peer or proxy did not start listening in time.
    #[error("{what} did not listen on {address} within {seconds} s; see its log at {log}")]
    NotListening {
        what: String,
        address: String,
        seconds: u64,
        log: PathBuf,
    },
    /// Certificates could not be minted.
    #[error("cannot mint benchmark certificates: {0}; this is a bug in the harness")]
    Certificates(String),
    /// The load generator's output could not be understood.
    #[error("cannot parse the output of {tool}: {detail}")]
    Parse { tool: String, detail: String },
    /// The plot could not be drawn.
    #[error(
        "cannot draw {path}: {detail}; a DejaVu or Liberation TTF font must exist under /usr/share/fonts"
    )]
    Plot { path: PathBuf, detail: String },
    /// The run was interrupted (Ctrl-C or SIGTERM); namespaces have been removed.
    #[error("interrupted; namespaces and processes were cleaned up")]
    Interrupted,
}

impl BenchError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        BenchError::Io {
            path: path.into(),
            source,
        }
    }
}

pub(crate) type Result<T> = std::result::Result<T, BenchError>;
