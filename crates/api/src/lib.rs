//! Istio-compatible resource model, YAML loading, validation and the pure policy engine.
//!
//! This crate does no I/O: callers pass text in and get values out, and timestamps are strings the
//! caller supplies (the store sets `metadata.creationTimestamp`, which "oldest wins" compares).
//!
//! - [`object`]: the generic [`Object`] envelope (`apiVersion`, `kind`, `metadata`, open body), kept
//!   JSON-shaped so Kubernetes fields we do not model survive a round trip.
//! - [`kinds`]: the served kinds (docs/SEMANTICS.md#resources) and their kubectl spellings ([`kind_for_spelling`],
//!   [`kind_for_type`], [`KindInfo::display_group`] for `meshpolicy.authentication.istio.io/default`).
//! - [`load`]: multi-document YAML or JSON ([`load_documents`]): `---`, empty documents skipped,
//!   `kind: List` expanded, every document validated, every problem reported as
//!   `file:line:col: field.path: found X, expected Y (did you mean Z?)`. [`validate_object`] applies
//!   the same rules to JSON arriving over an API. Istio kinds are strict (unknown fields are errors);
//!   Kubernetes kinds are checked where it matters and keep everything else.
//! - [`policy`]: the engine. Build a [`policy::PolicyIndex`] from the stored objects and a
//!   [`policy::MeshConfig`], then ask for a workload's server mode on a container port, a client
//!   namespace's TLS towards a host and port, or `tls-check` rows.
//!
//! Semantics follow docs/SEMANTICS.md. Where Istio leaves a choice we take (its #choices): the code over
//! the docs (oldest policy wins, not "random"); Istio 1.4's full replacement of the top-level `tls` by a
//! matching `portLevelSettings` entry; and, in `tls-check`, an unset client TLS without auto mTLS
//! counts as plaintext (CONFLICT against STRICT, as the walkthrough's 503 shows) and a server whose
//! workloads run no sidecar counts as plaintext-only.

pub mod inert;
pub mod inject;
pub mod kinds;
pub mod load;
pub mod mesh;
pub mod object;
pub mod policy;
mod validate;
mod yaml;

pub use kinds::{KindError, KindInfo, all_kinds, kind_for_spelling, kind_for_type};
pub use load::{
    Analysis, LoadError, Loaded, Problem, analyze_documents, load_documents,
    load_documents_with_warnings,
};
pub use object::{Object, ObjectMeta, split_api_version};
pub use validate::{FieldError, Warning, validate_object, validate_object_with_warnings};
pub use yaml::Position;
