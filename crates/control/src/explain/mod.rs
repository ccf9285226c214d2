//! Explanations the CLI asks the control plane for: computed here, from the store and the mesh options
//! the controllers use, with the same code that computes the sidecars' configuration; the CLI only
//! prints them.

mod authz;
mod proxy;
mod tls_check;

use ironmesh_api::Object;
use ironmesh_store::{LabelSelector, RouteError, Store};

pub(crate) use authz::check as authz;
pub(crate) use proxy::{cluster as proxy_clusters, secret as proxy_secret};
pub(crate) use tls_check::tls_check;

/// Every stored object, typed (objects that do not parse as one are skipped, as the controllers do).
pub(crate) fn stored_objects(store: &Store) -> Result<Vec<Object>, RouteError> {
    let list = store
        .list(None, None, &LabelSelector::default())
        .map_err(|e| RouteError::new(e.reason(), e.to_string()))?;
    Ok(list
        .items
        .into_iter()
        .filter_map(|value| serde_json::from_value(value).ok())
        .collect())
}
