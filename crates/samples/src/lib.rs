//! Bundled sample workloads the local runtime runs when an image names them (today: httpbin).

pub mod httpbin;
