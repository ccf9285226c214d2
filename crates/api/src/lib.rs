//! Istio-compatible resource model, YAML loading, validation and the pure policy engine.
