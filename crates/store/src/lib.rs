//! The resource store (redb) with watch, and the CLI API over a Unix socket: server and client.

pub mod client;
mod error;
mod kinds;
mod object;
mod selector;
mod server;
mod store;
pub mod wire;

pub use error::{Reason, StoreError};
pub use object::{ObjectKey, name_of, namespace_of, resource_version_of};
pub use selector::LabelSelector;
pub use server::{ByteStream, Reply, RouteError, Routes, ServeError, serve_api, serve_api_with};
pub use store::{
    ApplyAction, ApplyItem, ApplyOptions, ApplyResult, EventType, ObjectList, Store, WatchEvent,
    WriteMode,
};
