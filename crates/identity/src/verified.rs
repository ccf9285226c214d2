//! Certificate chains already verified against one trust bundle, so that a peer reconnecting with the same
//! certificate is not verified from scratch on every handshake.
//!
//! A sidecar's certificate lives for hours and every connection it opens presents it again: verifying its
//! chain is one P-256 signature check per handshake (about 11% of a server sidecar's CPU per full handshake,
//! BENCHMARKS.md "where a full handshake's server CPU goes"), with the same answer each time. The answer
//! depends only on the chain's exact bytes, the roots, the verification's purpose and the time; this cache
//! lives inside one trust bundle (a new bundle starts empty), is kept per purpose by its owner, and keeps
//! the time: an entry holds the window in which every certificate of the chain is valid, and is used only
//! inside it. Chromium's `CachingCertVerifier` remembers results the same way. What is never cached: the
//! handshake's own signature (CertificateVerify), which proves possession of the key on every connection,
//! and the SPIFFE identity checks, which the verifiers run every time. Should the verifiers ever check
//! revocation lists, a new list must start a new cache as a new bundle does.

use std::collections::HashMap;
use std::sync::Mutex;

use rustls::pki_types::CertificateDer;

/// Chains of one purpose (client or server authentication) verified against one trust bundle.
pub(crate) struct VerifiedChains {
    /// SHA-256 over the chain's certificates (each length-prefixed) → when all of them are valid.
    entries: Mutex<HashMap<ChainDigest, Validity>>,
    capacity: usize,
}

type ChainDigest = [u8; 32];

/// Seconds since the Unix epoch in which every certificate of a chain is within its validity period
/// (both ends included, as webpki checks them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Validity {
    pub(crate) not_before: u64,
    pub(crate) not_after: u64,
}

/// How many chains one bundle remembers per purpose: a sidecar talks to at most a few hundred peers at
/// once; 32 + 16 bytes an entry keeps the cache under ~200 KB at worst.
pub(crate) const CAPACITY: usize = 4096;

impl VerifiedChains {
    pub(crate) fn new(capacity: usize) -> Self {
        VerifiedChains {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// Whether this exact chain was verified and `now` (Unix seconds) is inside its validity window.
    pub(crate) fn contains(&self, chain: &ChainDigest, now: u64) -> bool {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(chain)
            .is_some_and(|valid| valid.not_before <= now && now <= valid.not_after)
    }

    /// Records a chain the full verification accepted at `now`. Full, the cache first drops the chains
    /// that expired, and empties itself only if that freed nothing: a peer sending many distinct chains
    /// can cost the others their entries (a full verification each, as without the cache), nothing more.
    pub(crate) fn remember(&self, chain: ChainDigest, validity: Validity, now: u64) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= self.capacity && !entries.contains_key(&chain) {
            entries.retain(|_, valid| now <= valid.not_after);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(chain, validity);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }
}

impl std::fmt::Debug for VerifiedChains {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.entries.lock().map(|e| e.len()).unwrap_or_default();
        f.debug_struct("VerifiedChains")
            .field("entries", &entries)
            .finish()
    }
}

/// The cache key of a chain: SHA-256 over each certificate's length and bytes, leaf first, so no two
/// different chains (not even one certificate split differently) share a key short of a SHA-256 collision.
pub(crate) fn chain_digest(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> ChainDigest {
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    for der in std::iter::once(end_entity).chain(intermediates) {
        context.update(&(der.len() as u64).to_be_bytes());
        context.update(der);
    }
    let mut digest = [0u8; 32];
    digest.copy_from_slice(context.finish().as_ref());
    digest
}

/// The window in which every certificate of the chain is valid; `None` if one cannot be parsed or the
/// windows do not overlap (then the chain is simply not remembered).
pub(crate) fn validity_of(
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<Validity> {
    use x509_parser::prelude::{FromDer, X509Certificate};
    let mut window = Validity {
        not_before: 0,
        not_after: u64::MAX,
    };
    for der in std::iter::once(end_entity).chain(intermediates) {
        let (_, cert) = X509Certificate::from_der(der).ok()?;
        let validity = cert.validity();
        let not_before = u64::try_from(validity.not_before.timestamp()).unwrap_or(0);
        let not_after = u64::try_from(validity.not_after.timestamp()).ok()?;
        window.not_before = window.not_before.max(not_before);
        window.not_after = window.not_after.min(not_after);
    }
    (window.not_before <= window.not_after).then_some(window)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A self-signed certificate valid from midnight UTC of `not_before` to midnight of `not_after`.
    pub(crate) fn cert(
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
        name: &str,
    ) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    /// 2026-01-01T00:00:00Z and the days around it, in Unix seconds.
    pub(crate) const JAN_1_2026: u64 = 1_767_225_600;
    pub(crate) const DAY: u64 = 86_400;

    #[test]
    fn a_remembered_chain_is_used_only_inside_its_validity_window() {
        let leaf = cert((2026, 1, 1), (2026, 1, 3), "leaf");
        let chains = VerifiedChains::new(CAPACITY);
        let key = chain_digest(&leaf, &[]);
        let validity = validity_of(&leaf, &[]).unwrap();
        assert_eq!(
            validity,
            Validity {
                not_before: JAN_1_2026,
                not_after: JAN_1_2026 + 2 * DAY
            }
        );
        assert!(
            !chains.contains(&key, JAN_1_2026 + DAY),
            "nothing remembered yet"
        );
        chains.remember(key, validity, JAN_1_2026);
        let cases = [
            (JAN_1_2026 - 1, false, "a second before notBefore"),
            (JAN_1_2026, true, "at notBefore"),
            (JAN_1_2026 + DAY, true, "inside"),
            (JAN_1_2026 + 2 * DAY, true, "at notAfter"),
            (JAN_1_2026 + 2 * DAY + 1, false, "a second after notAfter"),
        ];
        for (now, expected, case) in cases {
            assert_eq!(chains.contains(&key, now), expected, "{case}");
        }
    }

    #[test]
    fn the_window_of_a_chain_is_where_all_its_certificates_are_valid() {
        let leaf = cert((2026, 1, 2), (2026, 3, 1), "leaf");
        let intermediate = cert((2025, 6, 1), (2026, 2, 1), "intermediate");
        assert_eq!(
            validity_of(&leaf, std::slice::from_ref(&intermediate)),
            Some(Validity {
                not_before: JAN_1_2026 + DAY,
                not_after: JAN_1_2026 + 31 * DAY,
            })
        );
        // Disjoint windows: nothing to remember.
        let expired_intermediate = cert((2025, 1, 1), (2025, 6, 1), "old");
        assert_eq!(validity_of(&leaf, &[expired_intermediate]), None);
        assert_eq!(
            validity_of(&CertificateDer::from(vec![0x30, 0x00]), &[]),
            None
        );
    }

    #[test]
    fn different_chains_have_different_keys() {
        let leaf = cert((2026, 1, 1), (2026, 2, 1), "leaf");
        let other = cert((2026, 1, 1), (2026, 2, 1), "leaf");
        let intermediate = cert((2026, 1, 1), (2026, 2, 1), "intermediate");
        let keys = [
            chain_digest(&leaf, &[]),
            chain_digest(&other, &[]),
            chain_digest(&leaf, std::slice::from_ref(&intermediate)),
            chain_digest(&intermediate, std::slice::from_ref(&leaf)),
        ];
        for (i, a) in keys.iter().enumerate() {
            for b in &keys[i + 1..] {
                assert_ne!(a, b);
            }
        }
        assert_eq!(
            keys[0],
            chain_digest(&leaf, &[]),
            "the same chain, the same key"
        );
    }

    #[test]
    fn a_full_cache_drops_expired_chains_first_and_never_grows() {
        let chains = VerifiedChains::new(2);
        let forever = Validity {
            not_before: 0,
            not_after: u64::MAX,
        };
        let until_100 = Validity {
            not_before: 0,
            not_after: 100,
        };
        chains.remember([1; 32], forever, 10);
        chains.remember([2; 32], until_100, 10);
        chains.remember([2; 32], until_100, 10);
        assert_eq!(chains.len(), 2, "an entry seen again does not evict");
        // Full at 200: the expired entry goes, the live one stays.
        chains.remember([3; 32], forever, 200);
        assert_eq!(chains.len(), 2);
        assert!(chains.contains(&[1; 32], 200) && chains.contains(&[3; 32], 200));
        // Full with live entries only: emptied, then the new one.
        chains.remember([4; 32], forever, 200);
        assert_eq!(chains.len(), 1);
        assert!(chains.contains(&[4; 32], 200) && !chains.contains(&[1; 32], 200));
    }
}
