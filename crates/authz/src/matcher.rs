//! Value matchers compiled once from policy strings: Istio string patterns (exact, `abc*`, `*abc`, `*`)
//! and CIDR blocks (bare IPs are single-address blocks).

use std::net::IpAddr;

/// An Istio string pattern, compiled as Istio's `StringMatcherWithPrefix` does
/// (pilot/pkg/security/authz/matcher/string.go): `*` alone is presence, a leading `*` is a suffix match,
/// else a trailing `*` is a prefix match, anything else is exact. A `*` elsewhere is a literal character
/// (Istio's validation accepts `a*b` in principals, hosts, methods and paths and Envoy compares it as text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StringMatch {
    Exact(Box<str>),
    /// `abc*`: the value starts with `abc` (the value `abc` itself matches, as Envoy's prefix match).
    Prefix(Box<str>),
    /// `*abc`: the value ends with `abc`.
    Suffix(Box<str>),
    /// `*`: presence, i.e. any non-empty value.
    Presence,
}

impl StringMatch {
    pub(crate) fn parse(pattern: &str) -> Self {
        if pattern == "*" {
            Self::Presence
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            Self::Suffix(suffix.into())
        } else if let Some(prefix) = pattern.strip_suffix('*') {
            Self::Prefix(prefix.into())
        } else {
            Self::Exact(pattern.into())
        }
    }

    /// Case-sensitive match (principals, namespaces, methods, paths, header values, SNI).
    pub(crate) fn matches(&self, value: &str) -> bool {
        match self {
            Self::Exact(s) => value == &**s,
            Self::Prefix(s) => value.starts_with(&**s),
            Self::Suffix(s) => value.ends_with(&**s),
            Self::Presence => !value.is_empty(),
        }
    }

    /// ASCII case-insensitive match (hosts, which Istio compares ignoring case).
    pub(crate) fn matches_ignore_case(&self, value: &str) -> bool {
        let value = value.as_bytes();
        match self {
            Self::Exact(s) => value.eq_ignore_ascii_case(s.as_bytes()),
            Self::Prefix(s) => {
                value.len() >= s.len() && value[..s.len()].eq_ignore_ascii_case(s.as_bytes())
            }
            Self::Suffix(s) => {
                value.len() >= s.len()
                    && value[value.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            }
            Self::Presence => !value.is_empty(),
        }
    }
}

/// True when `patterns` is empty (field omitted) or one pattern matches a present value.
/// An absent value (no mTLS peer, no JWT, no SNI) never matches a positive field.
pub(crate) fn any_string(patterns: &[StringMatch], value: Option<&str>) -> bool {
    value.is_some_and(|v| patterns.iter().any(|p| p.matches(v)))
}

/// A `namespaces` pattern: Istio turns every `*` into `.*` inside `.*/ns/<pattern>/.*`
/// (srcNamespaceGenerator in pilot/pkg/security/authz/model/generator.go), so `*` may sit anywhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Glob(Box<str>);

impl Glob {
    pub(crate) fn parse(pattern: &str) -> Self {
        Self(pattern.into())
    }

    /// Wildcard match where each `*` stands for any run of characters, the empty one included.
    pub(crate) fn matches(&self, value: &str) -> bool {
        let mut parts = self.0.split('*');
        let first = parts.next().unwrap_or_default();
        let Some(mut rest) = value.strip_prefix(first) else {
            return false;
        };
        let parts: Vec<&str> = parts.collect();
        let Some((last, middle)) = parts.split_last() else {
            return rest.is_empty();
        };
        for part in middle {
            match rest.find(part) {
                Some(at) => rest = &rest[at + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }
}

/// One `serviceAccounts` entry (or `source.serviceAccount` value): `sa` or `namespace/sa`. An omitted
/// namespace is the policy's own, bound when the policy is indexed (Istio's serviceAccountRegex).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServiceAccount {
    /// Empty until bound to the policy namespace when the namespace was omitted.
    pub(crate) namespace: Box<str>,
    pub(crate) name: Box<str>,
    pub(crate) explicit_namespace: bool,
}

impl ServiceAccount {
    pub(crate) fn parse(value: &str) -> Self {
        match value.split_once('/') {
            Some((namespace, name)) => Self {
                namespace: namespace.into(),
                name: name.into(),
                explicit_namespace: true,
            },
            None => Self {
                namespace: "".into(),
                name: value.into(),
                explicit_namespace: false,
            },
        }
    }

    pub(crate) fn bind(&mut self, policy_namespace: &str) {
        if !self.explicit_namespace {
            self.namespace = policy_namespace.into();
        }
    }

    /// Istio matches `spiffe://.+/ns/<ns>/(.+/|)sa/<sa>(/.+)?` on the peer's URI SAN; `principal` is that
    /// SAN without `spiffe://`.
    pub(crate) fn matches(&self, principal: &str) -> bool {
        let segments: Vec<&str> = principal.split('/').collect();
        if segments.first().is_none_or(|td| td.is_empty()) {
            return false;
        }
        (1..segments.len()).any(|i| {
            segments[i] == "ns"
                && segments.get(i + 1) == Some(&&*self.namespace)
                && (i + 2..segments.len())
                    .any(|j| segments[j] == "sa" && segments.get(j + 1) == Some(&&*self.name))
        })
    }
}

/// A `trustDomains` entry (or `source.trustDomain` value), matched on the first segment of the peer's
/// principal as Istio's srcTrustDomainGenerator does: `*` is any authenticated peer, `td*`/`*td` match
/// within the trust domain only (`[^/]*`), anything else exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TrustDomain(StringMatch);

impl TrustDomain {
    pub(crate) fn parse(value: &str) -> Self {
        Self(StringMatch::parse(value))
    }

    pub(crate) fn matches(&self, principal: &str) -> bool {
        let trust_domain = principal.split('/').next().unwrap_or_default();
        match &self.0 {
            StringMatch::Presence => true,
            other => other.matches(trust_domain),
        }
    }
}

/// A CIDR block with the host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpNet {
    network: IpAddr,
    prefix_len: u8,
}

impl IpNet {
    /// Parses `10.0.0.0/8`, `fd00::/8` or a bare address (`10.1.2.3` = `/32`). Host bits are cleared,
    /// as Envoy's CidrRange does. `None` when it is not an address or the prefix is too long.
    pub(crate) fn parse(text: &str) -> Option<Self> {
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u8>().ok().filter(|p| *p <= max)?
            }
            Some(_) => return None,
            None => max,
        };
        Some(Self {
            network: mask(addr, prefix_len),
            prefix_len,
        })
    }

    /// True when `ip` is inside the block. IPv4-mapped IPv6 addresses count as IPv4.
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_ipv4() == self.network.is_ipv4() && mask(ip, self.prefix_len) == self.network
    }
}

fn mask(addr: IpAddr, prefix_len: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let bits = u32::from(v4);
            let keep = u32::MAX
                .checked_shl(32 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V4((bits & keep).into())
        }
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let keep = u128::MAX
                .checked_shl(128 - u32::from(prefix_len))
                .unwrap_or(0);
            IpAddr::V6((bits & keep).into())
        }
    }
}

/// True when `blocks` contains `ip`.
pub(crate) fn any_block(blocks: &[IpNet], ip: IpAddr) -> bool {
    blocks.iter().any(|b| b.contains(ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn string_patterns_follow_istio_exact_prefix_suffix_presence() {
        let cases = [
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("abc*", "abc", true),
            ("abc*", "abcdef", true),
            ("abc*", "xabc", false),
            ("*abc", "xxabc", true),
            ("*abc", "abcx", false),
            ("*", "x", true),
            ("*", "", false),
        ];
        for (pattern, value, want) in cases {
            let m = StringMatch::parse(pattern);
            assert_eq!(m.matches(value), want, "{pattern} vs {value}");
        }
        // A `*` in the middle is a literal (Istio's exact matcher on `a*b`).
        assert!(StringMatch::parse("a*b").matches("a*b"));
        assert!(!StringMatch::parse("a*b").matches("axb"));
    }

    #[test]
    fn host_patterns_ignore_ascii_case() {
        let m = StringMatch::parse("*.Example.com");
        assert!(m.matches_ignore_case("API.example.COM"));
        assert!(!m.matches_ignore_case("example.com"));
    }

    #[test]
    fn namespace_globs_take_a_star_anywhere() {
        for (pattern, value, want) in [
            ("foo", "foo", true),
            ("foo", "foobar", false),
            ("*", "", true),
            ("f*o", "foo", true),
            ("f*o", "fo", true),
            ("f*o", "fob", false),
            ("*-prod", "team-prod", true),
            ("team-*", "team-prod", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
        ] {
            assert_eq!(
                Glob::parse(pattern).matches(value),
                want,
                "{pattern} vs {value}"
            );
        }
    }

    #[test]
    fn service_accounts_match_istios_regex_on_the_principal() {
        let mut sa = ServiceAccount::parse("sleep");
        sa.bind("foo");
        assert!(sa.matches("cluster.local/ns/foo/sa/sleep"));
        assert!(!sa.matches("cluster.local/ns/bar/sa/sleep"));
        assert!(!sa.matches("cluster.local/ns/foo/sa/sleepy"));
        let explicit = ServiceAccount::parse("bar/sleep");
        assert!(explicit.matches("td.example/ns/bar/sa/sleep"));
        assert!(!explicit.matches("/ns/bar/sa/sleep"));
    }

    #[test]
    fn trust_domains_match_the_first_segment() {
        let td = |p: &str| TrustDomain::parse(p);
        assert!(td("cluster.local").matches("cluster.local/ns/foo/sa/a"));
        assert!(!td("cluster.local").matches("cluster.localx/ns/foo/sa/a"));
        assert!(td("cluster-*").matches("cluster-east/ns/foo/sa/a"));
        assert!(td("*.local").matches("cluster.local/ns/foo/sa/a"));
        assert!(!td("*.local").matches("cluster.remote/ns/foo.local/sa/a"));
        assert!(td("*").matches("anything/ns/foo/sa/a"));
    }

    #[test]
    fn cidr_blocks_contain_their_addresses_only() {
        let net = IpNet::parse("10.1.2.3/16").expect("valid");
        assert!(net.contains("10.1.200.7".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.1".parse().unwrap()));
        let single = IpNet::parse("192.168.0.5").expect("valid");
        assert!(single.contains("192.168.0.5".parse().unwrap()));
        assert!(!single.contains("192.168.0.6".parse().unwrap()));
        let all = IpNet::parse("0.0.0.0/0").expect("valid");
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        let v6 = IpNet::parse("fd00::/8").expect("valid");
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(IpNet::parse("10.0.0.0/33").is_none());
        assert!(IpNet::parse("not-an-ip").is_none());
    }
}
