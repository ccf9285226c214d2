//! The control plane to proxy configuration protocol: protobuf types, push hub and client.
