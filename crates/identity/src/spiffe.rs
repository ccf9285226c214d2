//! The typed SPIFFE identity of a workload: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

/// A workload identity in the Istio SPIFFE form `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

/// Why a string is not a valid SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error(
        "`{0}` does not start with `spiffe://`; write it as spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>"
    )]
    MissingScheme(String),
    #[error(
        "`{0}` must have exactly the path /ns/<namespace>/sa/<service-account> after the trust domain"
    )]
    WrongShape(String),
    #[error(
        "the {part} in `{input}` is empty or contains characters other than letters, digits, `-`, `_` and `.`"
    )]
    InvalidPart { part: &'static str, input: String },
}

impl SpiffeId {
    /// Builds an identity from its parts, checking each one.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, SpiffeIdError> {
        // Istio replaces `@` in the trust domain with `.`; do the same so both spellings mean one identity.
        let trust_domain = trust_domain.into().replace('@', ".");
        let id = SpiffeId {
            trust_domain,
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        let input = id.to_string();
        check_part("trust domain", &id.trust_domain, &input)?;
        check_part("namespace", &id.namespace, &input)?;
        check_part("service account", &id.service_account, &input)?;
        Ok(id)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// The AuthorizationPolicy principal form: the identity without the `spiffe://` prefix.
    pub fn principal(&self) -> String {
        format!(
            "{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

fn check_part(part: &'static str, value: &str, input: &str) -> Result<(), SpiffeIdError> {
    let valid = !value.is_empty()
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if valid {
        Ok(())
    } else {
        Err(SpiffeIdError::InvalidPart {
            part,
            input: input.to_owned(),
        })
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spiffe://{}", self.principal())
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let rest = s
            .strip_prefix("spiffe://")
            .ok_or_else(|| SpiffeIdError::MissingScheme(s.to_owned()))?;
        let parts: Vec<&str> = rest.split('/').collect();
        match parts.as_slice() {
            [td, "ns", ns, "sa", sa] => SpiffeId::new(*td, *ns, *sa),
            _ => Err(SpiffeIdError::WrongShape(s.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_displays_round_trip() {
        let id: SpiffeId = "spiffe://cluster.local/ns/foo/sa/httpbin".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "foo");
        assert_eq!(id.service_account(), "httpbin");
        assert_eq!(id.to_string(), "spiffe://cluster.local/ns/foo/sa/httpbin");
        assert_eq!(id.principal(), "cluster.local/ns/foo/sa/httpbin");
    }

    #[test]
    fn at_sign_in_trust_domain_becomes_a_dot() {
        let id: SpiffeId = "spiffe://cluster@local/ns/a/sa/b".parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
    }

    #[test]
    fn refuses_malformed_ids_with_a_reason() {
        let cases = [
            ("http://cluster.local/ns/a/sa/b", "spiffe://"),
            ("spiffe://cluster.local/ns/a", "exactly the path"),
            ("spiffe://cluster.local/ns/a/sa/b/extra", "exactly the path"),
            (
                "spiffe://cluster.local/namespace/a/sa/b",
                "exactly the path",
            ),
            ("spiffe:///ns/a/sa/b", "trust domain"),
            ("spiffe://td/ns//sa/b", "namespace"),
            ("spiffe://td/ns/a/sa/b c", "service account"),
        ];
        for (input, expected) in cases {
            let err = input.parse::<SpiffeId>().unwrap_err().to_string();
            assert!(err.contains(expected), "{input}: {err}");
        }
    }
}
