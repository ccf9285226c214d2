//! ironmesh-proxy: the transparent mTLS sidecar.
