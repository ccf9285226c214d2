//! The name and address checks Istio's validation is built from: DNS-1123 labels, wildcard domains,
//! FQDNs, Kubernetes label keys and values, IP addresses, Unix socket paths and protocol names.
//! Sources: istio/istio `pkg/config/labels/instance.go`, `pkg/config/validation/agent/validation.go`
//! (`ValidateWildcardDomain`, `ValidateFQDN`, `ValidateDNS1123Labels`, `ValidateIPAddress`),
//! `pkg/config/validation/validation.go` (`ValidateUnixAddress`) and `pkg/config/protocol/instance.go`.

/// Istio's `labels.IsDNS1123Label`: 1-63 of `[a-zA-Z0-9-]`, starting and ending alphanumeric (Istio
/// allows upper case here, unlike Kubernetes object names).
pub(crate) fn is_dns1123_label(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Istio's `labels.IsWildcardDNS1123Label`: `*`, or a label optionally prefixed by `*` or `*-`.
pub(crate) fn is_wildcard_dns1123_label(value: &str) -> bool {
    if value.len() > 63 {
        return false;
    }
    if value == "*" {
        return true;
    }
    let rest = value
        .strip_prefix("*-")
        .or_else(|| value.strip_prefix('*'))
        .unwrap_or(value);
    is_dns1123_label(rest)
}

/// `CheckDNS1123Preconditions`: not empty, at most 255 characters.
fn dns1123_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name {name:?} too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

/// `ValidateDNS1123Labels`: every dot-separated label valid (a trailing dot allowed) and a top-level
/// label that is not all digits.
pub(crate) fn validate_dns1123_labels(domain: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let top = parts[parts.len() - 1];
    if !top.is_empty() && top.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "domain name {domain:?} invalid (top level domain {top:?} cannot be all-numeric)"
        ));
    }
    for (index, label) in parts.iter().enumerate() {
        if index == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name {domain:?} invalid (label {label:?} invalid)"
            ));
        }
    }
    Ok(())
}

/// `ValidateWildcardDomain`: a host name whose first label may be a wildcard (`*`, `*.foo.com`).
pub(crate) fn validate_wildcard_domain(domain: &str) -> Result<(), String> {
    dns1123_preconditions(domain)?;
    let (first, rest) = match domain.split_once('.') {
        Some((first, rest)) => (first, Some(rest)),
        None => (domain, None),
    };
    if !is_wildcard_dns1123_label(first) {
        return Err(format!(
            "domain name {domain:?} invalid (label {first:?} invalid)"
        ));
    }
    match rest {
        Some(rest) => validate_dns1123_labels(rest),
        None => Ok(()),
    }
}

/// `ValidateFQDN`: a host name without wildcards.
pub(crate) fn validate_fqdn(fqdn: &str) -> Result<(), String> {
    dns1123_preconditions(fqdn)?;
    validate_dns1123_labels(fqdn)
}

/// `ValidateIPAddress` (Go's `netip.ParseAddr`): an IPv4 or IPv6 address, no port, no brackets.
pub(crate) fn is_ip_address(addr: &str) -> bool {
    addr.parse::<std::net::IpAddr>().is_ok()
}

/// `ValidateUnixAddress`: an absolute path not ending in `/`, or an abstract socket `@name`.
pub(crate) fn validate_unix_address(addr: &str) -> Result<(), String> {
    if addr.is_empty() {
        return Err("unix address must not be empty".into());
    }
    if addr.starts_with('@') {
        return Ok(());
    }
    if !addr.starts_with('/') || addr.ends_with('/') {
        return Err(format!("{addr} is not an absolute path to a file"));
    }
    Ok(())
}

/// Kubernetes' qualified name: alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn is_qualified_name(value: &str) -> bool {
    !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// Istio's `validateTagKey`: an optional DNS prefix (`example.com/`, at most 253 characters) and a
/// qualified name of at most 63 characters.
pub(crate) fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| !p.is_empty() && p.split('.').all(is_dns1123_label));
    if !prefix_ok || !is_qualified_name(name) {
        return Err(format!("invalid tag key: {key:?}"));
    }
    if prefix.is_some_and(|p| p.len() > 253) {
        return Err(format!("invalid tag key: {key:?} (DNS prefix is too long)"));
    }
    if name.len() > 63 {
        return Err(format!("invalid tag key: {key:?} (name is too long)"));
    }
    Ok(())
}

/// Istio's label value rule: empty, or a qualified name.
pub(crate) fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_qualified_name(value) {
        Ok(())
    } else {
        Err(format!("invalid tag value: {value:?}"))
    }
}

/// `protocol.Parse` knows the name (case-insensitive); an empty protocol means "sniffed".
pub(crate) fn is_known_protocol(protocol: &str) -> bool {
    protocol.is_empty()
        || matches!(
            protocol.to_ascii_lowercase().as_str(),
            "tcp"
                | "udp"
                | "grpc"
                | "grpc-web"
                | "http"
                | "http_proxy"
                | "http2"
                | "https"
                | "tls"
                | "mongo"
                | "redis"
                | "mysql"
        )
}

/// `protocol.Instance.IsHTTP`.
pub(crate) fn is_http_protocol(protocol: &str) -> bool {
    matches!(
        protocol.to_ascii_lowercase().as_str(),
        "http" | "http2" | "http_proxy" | "grpc" | "grpc-web"
    )
}

/// `protocol.Instance.IsTLS`.
pub(crate) fn is_tls_protocol(protocol: &str) -> bool {
    matches!(protocol.to_ascii_lowercase().as_str(), "https" | "tls")
}

/// Go's `net.SplitHostPort`: `host:port`, `[v6]:port` or `:port`.
pub(crate) fn split_host_port(address: &str) -> Result<(&str, &str), String> {
    if let Some(rest) = address.strip_prefix('[') {
        let Some((host, after)) = rest.split_once(']') else {
            return Err(format!("address {address}: missing ']' in address"));
        };
        let Some(port) = after.strip_prefix(':') else {
            return Err(format!("address {address}: missing port in address"));
        };
        return Ok((host, port));
    }
    let Some((host, port)) = address.rsplit_once(':') else {
        return Err(format!("address {address}: missing port in address"));
    };
    if host.contains(':') {
        return Err(format!("address {address}: too many colons in address"));
    }
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_domains_as_istio_reads_them() {
        for ok in [
            "reviews",
            "*.bar.com",
            "*",
            "*-foo.bar",
            "foo.bar.com.",
            "Reviews.Default",
        ] {
            assert!(validate_wildcard_domain(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "foo.*.com",
            "192.168.0.1",
            "foo..bar",
            "-a.b",
            "*foo*.com",
        ] {
            assert!(validate_wildcard_domain(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn label_keys_and_values() {
        assert!(validate_label_key("app.kubernetes.io/name").is_ok());
        assert!(validate_label_key("version").is_ok());
        assert!(validate_label_key("-bad").is_err());
        assert!(validate_label_key("a/b/c").is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("v1.2_x").is_ok());
        assert!(validate_label_value("v1*").is_err());
    }

    #[test]
    fn host_port_splitting() {
        assert_eq!(split_host_port("127.0.0.1:80"), Ok(("127.0.0.1", "80")));
        assert_eq!(split_host_port("[::1]:80"), Ok(("::1", "80")));
        assert_eq!(split_host_port(":80"), Ok(("", "80")));
        assert!(split_host_port("127.0.0.1").is_err());
        assert!(split_host_port("::1:80").is_err());
    }
}
