//! Store errors, each carrying the kubectl-style reason the CLI prints (`Error from server (NotFound): ...`).

use serde::{Deserialize, Serialize};

/// The kubectl-style reason of a failed request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reason {
    NotFound,
    AlreadyExists,
    Invalid,
    BadRequest,
    /// A watch asked for changes older than the store keeps (Kubernetes' 410 Gone).
    Expired,
    InternalError,
}

impl Reason {
    /// The spelling kubectl uses in `Error from server (<reason>)`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "NotFound",
            Reason::AlreadyExists => "AlreadyExists",
            Reason::Invalid => "Invalid",
            Reason::BadRequest => "BadRequest",
            Reason::Expired => "Expired",
            Reason::InternalError => "InternalError",
        }
    }

    /// The HTTP status the CLI API answers with for this reason.
    pub(crate) fn http_status(self) -> u16 {
        match self {
            Reason::NotFound => 404,
            Reason::AlreadyExists => 409,
            Reason::Invalid => 422,
            Reason::BadRequest => 400,
            Reason::Expired => 410,
            Reason::InternalError => 500,
        }
    }
}

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `namespaces "foo" not found`: create it first (`ironmesh create ns foo`) or fix the name.
    #[error("{plural} \"{name}\" not found")]
    NotFound { plural: String, name: String },
    #[error("{plural} \"{name}\" already exists")]
    AlreadyExists { plural: String, name: String },
    /// A document failed validation; the message names where (file:line) and what to fix.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(
        "too old resource version: {resource_version}; the store no longer keeps those changes, list again and watch from the list's resourceVersion"
    )]
    Expired { resource_version: u64 },
    /// The database failed; the message says which file and what to check.
    #[error("store {path}: {message} (check disk space and permissions of the state directory)")]
    Storage { path: String, message: String },
}

impl StoreError {
    pub fn reason(&self) -> Reason {
        match self {
            StoreError::NotFound { .. } => Reason::NotFound,
            StoreError::AlreadyExists { .. } => Reason::AlreadyExists,
            StoreError::Invalid(_) => Reason::Invalid,
            StoreError::BadRequest(_) => Reason::BadRequest,
            StoreError::Expired { .. } => Reason::Expired,
            StoreError::Storage { .. } => Reason::InternalError,
        }
    }

    pub(crate) fn not_found(plural: &str, name: &str) -> Self {
        StoreError::NotFound {
            plural: plural.to_string(),
            name: name.to_string(),
        }
    }
}
