//! Fuzzes the decoding and compiling of pushed configurations: never panics, and anything accepted
//! compiles again after a round trip.
#![no_main]

use ironmesh_proto::decode_config;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    if let Ok(compiled) = decode_config(data) {
        let again = compiled.config.encode_to_vec();
        assert!(decode_config(&again).is_ok());
    }
});
