//! Value matchers compiled once from policy strings: Istio string patterns (exact, `abc*`, `*abc`, `*`)
//! and CIDR blocks (bare IPs are single-address blocks).

use std::net::IpAddr;

/// An Istio string pattern. Istio's only wildcard is a single `*` at the start or the end
/// (API-AP "exact match, prefix match, suffix match and presence match").
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
    /// Parses a pattern; `None` when a `*` sits in the middle, which Istio cannot express.
    pub(crate) fn parse(pattern: &str) -> Option<Self> {
        if pattern == "*" {
            return Some(Self::Presence);
        }
        let compiled = if let Some(prefix) = pattern.strip_suffix('*') {
            Self::Prefix(prefix.into())
        } else if let Some(suffix) = pattern.strip_prefix('*') {
            Self::Suffix(suffix.into())
        } else {
            Self::Exact(pattern.into())
        };
        let inner = match &compiled {
            Self::Exact(s) | Self::Prefix(s) | Self::Suffix(s) => s,
            Self::Presence => return Some(compiled),
        };
        (!inner.contains('*')).then_some(compiled)
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
        let addr: IpAddr = addr.trim().parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix_len = match prefix {
            Some(p) => p.trim().parse::<u8>().ok().filter(|p| *p <= max)?,
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
            let m = StringMatch::parse(pattern).expect("valid pattern");
            assert_eq!(m.matches(value), want, "{pattern} vs {value}");
        }
        assert!(StringMatch::parse("a*b").is_none());
    }

    #[test]
    fn host_patterns_ignore_ascii_case() {
        let m = StringMatch::parse("*.Example.com").expect("valid");
        assert!(m.matches_ignore_case("API.example.COM"));
        assert!(!m.matches_ignore_case("example.com"));
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
