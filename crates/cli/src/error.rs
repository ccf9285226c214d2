//! The CLI's errors and how they are printed (kubectl's `error: ...` and `Error from server (...)`).

use ironmesh_store::client::ClientError;

#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    /// A mistake in the command or its input; the message says what to change.
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Load(#[from] ironmesh_api::LoadError),
    /// Already printed (e.g. some deletions of a file failed); only the exit code is left.
    #[error("")]
    Reported,
}

impl CliError {
    /// Prints the error as kubectl would, to stderr.
    pub(crate) fn print(&self) {
        match self {
            CliError::Reported => {}
            CliError::Client(e @ ClientError::Server { .. }) => eprintln!("{e}"),
            other => eprintln!("error: {other}"),
        }
    }
}
