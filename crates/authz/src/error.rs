//! Errors of the authz crate: a spec problem names the JSON field path; an index problem names the policy.

/// A problem in one AuthorizationPolicy `spec`, naming the field path (e.g. `spec.rules[0].from[0].source.namespaces`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct SpecError {
    /// Where in the policy the problem is, starting at `spec`.
    pub path: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl SpecError {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Building an [`crate::AuthzIndex`] failed because one policy is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    /// The policy `namespace/name` has an invalid spec; fix or delete it (nothing was enforced from this set).
    #[error("AuthorizationPolicy {namespace}/{name} is invalid: {source}")]
    InvalidPolicy {
        namespace: String,
        name: String,
        #[source]
        source: SpecError,
    },
}
