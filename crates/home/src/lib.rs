//! What every ironmesh process agrees on about the host: the `$IRONMESH_HOME` layout ([`Home`]), the
//! cluster's id ([`ClusterId`]), how a Unix socket is bound ([`bind_unix`]), whether a process still runs
//! ([`is_alive`], [`start_time`]) and where bundled programs are ([`bin_dir`], [`find_program`]).
//!
//! One copy of each: the CLI, the control plane and the runtime used to spell these each on their own, and
//! a drift between them (a file moved in one, a zombie counted alive in another) breaks `down` or `up`
//! silently.

mod home;
mod proc;
mod socket;

pub use home::{ClusterId, DEFAULT_HOME, Home, RUNTIME_ROOT, fnv1a64};
pub use proc::{bin_dir, find_program, is_alive, start_time, started_at};
pub use socket::bind_unix;

use std::path::PathBuf;

/// Why a path under the home, or a socket, could not be used; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error(
        "cannot {action} {path}: {source}; set IRONMESH_HOME to a writable directory or run as root"
    )]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is in use: another process answers on it; stop it first (`ironmesh down`, or the process owning it)"
    )]
    SocketInUse { path: PathBuf },
}

impl HomeError {
    pub(crate) fn io(action: &'static str, path: &std::path::Path, source: std::io::Error) -> Self {
        HomeError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
