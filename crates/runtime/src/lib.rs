//! The local runtime: node and pod network namespaces, service NAT, name resolution, container processes.
