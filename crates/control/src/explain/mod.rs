//! Explanations the CLI asks the control plane for: computed here, from the resource source and the mesh
//! options the controllers use, with the same code that computes the sidecars' configuration; the CLI only
//! prints them.

mod authz;
mod proxy;
mod tls_check;

pub(crate) use authz::check as authz;
pub(crate) use proxy::{cluster as proxy_clusters, secret as proxy_secret};
pub(crate) use tls_check::tls_check;
