//! Fuzzes the decoding and validation of pushed configurations: never panics, and anything accepted
//! re-validates after a round trip.
#![no_main]

use ironmesh_proto::{decode_config, validate_config};
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(config) = decode_config(data) {
        let again = ironmesh_proto::pb::ProxyConfig::decode(config.encode_to_vec().as_slice()).unwrap();
        assert_eq!(validate_config(&again), Ok(()));
    }
});
