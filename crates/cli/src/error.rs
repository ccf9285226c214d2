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
    /// A command run in a pod failed with this code (already reported); `ironmesh` exits with it.
    #[error("")]
    Exit(i32),
    /// Already printed (e.g. some deletions of a file failed); only the exit code is left.
    #[error("")]
    Reported,
}

impl CliError {
    /// A request the control plane refused as a bad one (nothing to retire, a pod without a sidecar, no
    /// log yet) is about the command, so it reads as `error: ...` as it did when the CLI found it out
    /// itself; a missing object stays kubectl's `Error from server (NotFound)`.
    pub(crate) fn refused(error: ClientError) -> CliError {
        match error {
            ClientError::Server {
                reason: ironmesh_store::Reason::BadRequest,
                message,
            } => CliError::Usage(message),
            other => CliError::Client(other),
        }
    }

    /// The process exit code for this error.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            CliError::Exit(code) => u8::try_from(*code).unwrap_or(1).max(1),
            _ => 1,
        }
    }

    /// Prints the error as kubectl would, to stderr.
    pub(crate) fn print(&self) {
        match self {
            CliError::Reported | CliError::Exit(_) => {}
            CliError::Client(e @ ClientError::Server { .. }) => eprintln!("{e}"),
            other => eprintln!("error: {other}"),
        }
    }
}
