//! Fuzzes the inbound first-bytes decision: STRICT never forwards raw (plaintext) bytes.
#![no_main]

use ironmesh_proto::pb::ServerMode;
use ironmesh_proxy::detect::{
    FirstBytes, InboundAction, TlsAction, after_client_hello, classify_first_bytes, inbound_action,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let first = match classify_first_bytes(data) {
        FirstBytes::NeedMore => FirstBytes::Plaintext,
        decided => decided,
    };
    let action = inbound_action(ServerMode::Strict, first);
    assert_ne!(action, InboundAction::ForwardRaw, "STRICT forwarded {data:?}");
    // Whatever ALPN the bytes claim, STRICT terminates (and so demands a mesh client certificate).
    let alpn = data.split(|byte| *byte == b',');
    assert_eq!(after_client_hello(ServerMode::Strict, alpn), TlsAction::TerminateMtls);
});
