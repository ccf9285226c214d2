//! The inbound first-bytes decision: TLS or plaintext, mesh mTLS or application TLS, and what each server
//! mode does with it. Pure functions, fuzzed by proptest: STRICT never forwards plaintext.

use ironmesh_proto::pb::ServerMode;

/// What the first bytes of a connection look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FirstBytes {
    /// A TLS handshake record (`0x16 0x03 0x01..=0x04`).
    Tls,
    /// Anything else (HTTP method, h2 preface, opaque TCP, or nothing within the first-bytes timeout).
    Plaintext,
    /// Too few bytes to tell; read more.
    NeedMore,
}

pub fn classify_first_bytes(bytes: &[u8]) -> FirstBytes {
    match bytes {
        [] => FirstBytes::NeedMore,
        [0x16] | [0x16, 0x03] => FirstBytes::NeedMore,
        [0x16, 0x03, minor, ..] if (1..=4).contains(minor) => FirstBytes::Tls,
        _ => FirstBytes::Plaintext,
    }
}

/// What the inbound listener does with a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InboundAction {
    /// Close with a TCP reset.
    Reset,
    /// Copy the bytes to the application as they are (plaintext, or TLS in DISABLE mode).
    ForwardRaw,
    /// Read the ClientHello, then decide with [`after_client_hello`].
    ReadClientHello,
}

/// Decision on the first bytes alone. `NeedMore` must not reach here: treat a first-bytes timeout as plaintext.
pub fn inbound_action(mode: ServerMode, first: FirstBytes) -> InboundAction {
    match (mode, first) {
        (ServerMode::Disable, _) => InboundAction::ForwardRaw,
        (_, FirstBytes::Tls) => InboundAction::ReadClientHello,
        (ServerMode::Strict, _) => InboundAction::Reset,
        // An unset mode is PERMISSIVE (Istio's default).
        (ServerMode::Permissive | ServerMode::Unspecified, _) => InboundAction::ForwardRaw,
    }
}

/// ALPN values a mesh client sidecar offers (Istio's): `istio-peer-exchange`, `istio`, `istio-http/*`, `istio-h2`.
pub fn is_mesh_alpn(protocol: &[u8]) -> bool {
    protocol == b"istio-peer-exchange"
        || protocol == b"istio"
        || protocol == b"istio-h2"
        || protocol.starts_with(b"istio-http/")
}

/// What to do once the ClientHello is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsAction {
    /// Terminate mTLS (client certificate required) and forward to the app on loopback.
    TerminateMtls,
    /// The application's own TLS: pass the bytes through untouched.
    PassThrough,
}

/// STRICT terminates every TLS connection (a client without a mesh certificate then fails the handshake);
/// PERMISSIVE terminates only mesh ALPN and passes application TLS through.
pub fn after_client_hello<'a>(
    mode: ServerMode,
    mut alpn: impl Iterator<Item = &'a [u8]>,
) -> TlsAction {
    match mode {
        ServerMode::Strict => TlsAction::TerminateMtls,
        _ if alpn.any(is_mesh_alpn) => TlsAction::TerminateMtls,
        _ => TlsAction::PassThrough,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn classifies_tls_records_and_http() {
        assert_eq!(
            classify_first_bytes(b"\x16\x03\x01\x02\x00"),
            FirstBytes::Tls
        );
        assert_eq!(
            classify_first_bytes(b"GET / HTTP/1.1"),
            FirstBytes::Plaintext
        );
        assert_eq!(
            classify_first_bytes(b"PRI * HTTP/2.0"),
            FirstBytes::Plaintext
        );
        assert_eq!(classify_first_bytes(b"\x16"), FirstBytes::NeedMore);
        assert_eq!(classify_first_bytes(b"\x16\x03\x09"), FirstBytes::Plaintext);
    }

    #[test]
    fn mode_table() {
        use InboundAction::*;
        assert_eq!(
            inbound_action(ServerMode::Strict, FirstBytes::Plaintext),
            Reset
        );
        assert_eq!(
            inbound_action(ServerMode::Strict, FirstBytes::Tls),
            ReadClientHello
        );
        assert_eq!(
            inbound_action(ServerMode::Permissive, FirstBytes::Plaintext),
            ForwardRaw
        );
        assert_eq!(
            inbound_action(ServerMode::Disable, FirstBytes::Tls),
            ForwardRaw
        );
        let istio: [&[u8]; 2] = [b"istio-http/1.1", b"http/1.1"];
        let app: [&[u8]; 1] = [b"http/1.1"];
        assert_eq!(
            after_client_hello(ServerMode::Permissive, istio.into_iter()),
            TlsAction::TerminateMtls
        );
        assert_eq!(
            after_client_hello(ServerMode::Permissive, app.into_iter()),
            TlsAction::PassThrough
        );
        assert_eq!(
            after_client_hello(ServerMode::Strict, app.into_iter()),
            TlsAction::TerminateMtls
        );
    }

    proptest! {
        #[test]
        fn strict_never_forwards_raw_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let first = match classify_first_bytes(&bytes) {
                FirstBytes::NeedMore => FirstBytes::Plaintext, // what a first-bytes timeout becomes
                other => other,
            };
            let action = inbound_action(ServerMode::Strict, first);
            prop_assert_ne!(action, InboundAction::ForwardRaw);
            if action == InboundAction::ReadClientHello {
                prop_assert_eq!(after_client_hello(ServerMode::Strict, std::iter::empty()), TlsAction::TerminateMtls);
            }
        }
    }
}
