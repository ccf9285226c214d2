//! Property tests for the parsers that face untrusted input: SPIFFE IDs, CSRs and credentials.

mod support;

use std::time::{Duration, SystemTime};

use ironmesh_identity::{CA_AUDIENCE, CredentialAuthority, SpiffeId};
use proptest::prelude::*;
use support::*;

proptest! {
    #[test]
    fn valid_ids_round_trip(td in "[a-z0-9][a-z0-9.-]{0,20}", ns in "[a-z0-9][a-z0-9-]{0,20}", sa in "[a-z0-9][a-z0-9_.-]{0,20}") {
        let id = SpiffeId::new(td.clone(), ns.clone(), sa.clone()).unwrap();
        let text = id.to_string();
        prop_assert_eq!(text.parse::<SpiffeId>().unwrap(), id);
        prop_assert_eq!(text, format!("spiffe://{td}/ns/{ns}/sa/{sa}"));
    }

    #[test]
    fn arbitrary_text_never_panics_and_accepted_ids_reprint_the_same(input in ".{0,80}") {
        if let Ok(id) = input.parse::<SpiffeId>() {
            // Only the `@` -> `.` trust-domain rewrite may change the text.
            prop_assert_eq!(id.to_string(), input.replace('@', "."));
        }
    }

    #[test]
    fn arbitrary_tokens_are_refused_without_panicking(token in ".{0,200}") {
        let credentials = CredentialAuthority::from_secret(&[3; 32]);
        prop_assert!(credentials.verify(&token, CA_AUDIENCE, SystemTime::now()).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn mangled_csrs_are_refused_without_panicking(flip in 0usize..2000, byte in any::<u8>()) {
        let dir = tempfile::tempdir().unwrap();
        let ca = new_ca(dir.path());
        let (csr, _) = ironmesh_identity::csr_for(&id("foo", "sleep")).unwrap();
        let mut bytes = csr.into_bytes();
        let at = flip % bytes.len();
        if bytes[at] == byte {
            return Ok(());
        }
        bytes[at] = byte;
        let mangled = String::from_utf8_lossy(&bytes).into_owned();
        // Either refused, or (a change in PEM whitespace / base64 padding) signed for the caller only.
        if let Ok(chain) = ca.sign_workload(&mangled, &id("foo", "sleep"), Duration::from_secs(60)) {
            prop_assert_eq!(chain.len(), 2);
        }
    }
}
