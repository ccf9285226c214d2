//! Istio-compatible resource model, YAML loading, validation and the pure policy engine.
//!
//! This crate does no I/O: callers pass text in and get values out, and timestamps are strings the
//! caller supplies.
//!
//! - [`object`]: the generic [`Object`] envelope (`apiVersion`, `kind`, `metadata`, open body).
//! - [`kinds`]: the served kinds and their kubectl spellings ([`kind_for_spelling`], [`kind_for_type`]).
//! - [`load`]: multi-document YAML/JSON loading with `file:line:col: path: message` errors
//!   ([`load_documents`]), and [`validate_object`] for JSON arriving over an API.

pub mod kinds;
pub mod load;
pub mod object;
pub mod policy;
mod validate;
mod yaml;

pub use kinds::{KindError, KindInfo, all_kinds, kind_for_spelling, kind_for_type};
pub use load::{LoadError, Loaded, Problem, load_documents};
pub use object::{Object, ObjectMeta, split_api_version};
pub use validate::{FieldError, validate_object};
pub use yaml::Position;
