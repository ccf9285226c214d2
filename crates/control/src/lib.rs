//! The control plane: resource store, CLI API, CA and configuration streaming, local runtime orchestration.
