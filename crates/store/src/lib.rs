//! The resource store (redb) with watch, and the CLI API over a Unix socket: server and client.
