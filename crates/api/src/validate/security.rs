//! Istio's validation of the authentication kinds: `PeerAuthentication` (security.istio.io
//! v1beta1/v1, istio/istio `pkg/config/validation/validation.go` `ValidatePeerAuthentication`) and the
//! v1alpha1 `Policy`/`MeshPolicy` as Istio 1.1-1.5 validated them (`ValidateAuthenticationPolicy`,
//! `validateAuthNPolicyTarget`, `validateAuthNPortSelector`, `validateJwt` in
//! `pilot/pkg/model/validation.go` of 1.1 and `pkg/config/validation/validation.go` of 1.5; `ParseJwksURI`
//! in `pkg/config/security/security.go` of 1.5).

use std::collections::HashSet;

use serde_json::Value;

use super::names::is_dns1123_label;
use super::networking::workload_selector;
use super::report::{Report, field, list, text, uint};
use crate::yaml::{join_index, join_key};

/// `ValidatePeerAuthentication`.
pub(crate) fn peer_authentication(spec: &Value, r: &mut Report) {
    let selector = field(spec, "selector");
    let empty_selector = selector
        .and_then(|s| field(s, "matchLabels"))
        .and_then(Value::as_object)
        .is_none_or(|labels| labels.is_empty());
    let port_level = field(spec, "portLevelMtls").and_then(Value::as_object);
    if empty_selector && port_level.is_some_and(|p| !p.is_empty()) {
        r.error(
            "spec.portLevelMtls",
            "portLevelMtls requires a selector: add spec.selector.matchLabels for the workload (mesh/namespace peer authentication cannot have port level mTLS)",
        );
    }
    if port_level.is_some_and(|p| p.is_empty()) {
        r.error(
            "spec.portLevelMtls",
            "found an empty map, expected at least one port (port level mTLS, if defined, must have at least one element)",
        );
    }
    if workload_selector("spec.selector", selector, "matchLabels", r) {
        r.warn(
            "spec.selector",
            "workload selector specified without labels",
        );
    }
}

/// `ValidateAuthenticationPolicy` of Istio 1.1-1.5. A `MeshPolicy` is cluster-scoped: named `default`,
/// no targets. A namespaced `Policy` without targets is the namespace's `default`; with targets it must
/// have another name.
pub(crate) fn legacy_policy(cluster_scoped: bool, name: &str, spec: &Value, r: &mut Report) {
    let targets = list(spec, "targets");
    if cluster_scoped {
        if name != "default" {
            r.error(
                "metadata.name",
                format!(
                    "found {name:?}, expected \"default\" (a MeshPolicy must be named default)"
                ),
            );
        }
        if !targets.is_empty() {
            r.error(
                "spec.targets",
                "found targets, expected none (a MeshPolicy applies to the whole mesh; use a Policy to target services)",
            );
        }
    } else {
        if targets.is_empty() && name != "default" {
            r.error(
                "metadata.name",
                format!(
                    "found {name:?}, expected \"default\" (a Policy without targets is namespace-wide and must be named default; or add spec.targets)"
                ),
            );
        }
        if !targets.is_empty() && name == "default" {
            r.error(
                "metadata.name",
                "found \"default\", expected another name (a Policy with targets must not be named default)",
            );
        }
    }
    for (index, target) in targets.iter().enumerate() {
        legacy_target(&join_index("spec.targets", index), target, r);
    }
    let mut issuers = HashSet::new();
    for (index, peer) in list(spec, "peers").iter().enumerate() {
        let path = join_index("spec.peers", index);
        if field(peer, "mtls").is_some() && field(peer, "jwt").is_some() {
            r.error(
                &path,
                "found mtls and jwt, expected one of them (a peer method is either mtls or jwt)",
            );
        }
        if let Some(jwt) = field(peer, "jwt") {
            legacy_jwt(&join_key(&path, "jwt"), jwt, &mut issuers, r);
        }
    }
    for (index, origin) in list(spec, "origins").iter().enumerate() {
        let path = join_index("spec.origins", index);
        if origin.is_null() {
            r.error(
                path,
                "found null, expected an origin with a jwt (origin cannot be empty)",
            );
            continue;
        }
        match field(origin, "jwt") {
            None => r.error(
                join_key(&path, "jwt"),
                "missing, expected the jwt that authenticates the origin (jwt cannot be empty)",
            ),
            Some(jwt) => legacy_jwt(&join_key(&path, "jwt"), jwt, &mut issuers, r),
        }
    }
}

/// `validateAuthNPolicyTarget` and `validateAuthNPortSelector`.
fn legacy_target(path: &str, target: &Value, r: &mut Report) {
    let name = text(target, "name");
    if name.is_empty() {
        r.error(
            join_key(path, "name"),
            "missing, expected the short name of a service",
        );
    } else if !is_dns1123_label(name) {
        r.error(
            join_key(path, "name"),
            format!("found {name:?}, expected the short name of a service, a DNS-1123 label (target name must be a valid label)"),
        );
    }
    for (index, port) in list(target, "ports").iter().enumerate() {
        let port_path = join_index(&join_key(path, "ports"), index);
        let number = uint(port, "number");
        let port_name = text(port, "name");
        if number != 0 {
            if number > 65535 {
                r.error(
                    join_key(&port_path, "number"),
                    format!("found {number}, expected a port number 1-65535"),
                );
            }
        } else if port_name.is_empty() {
            r.error(
                port_path,
                "missing, expected a port number 1-65535 or a port name",
            );
        } else if !is_dns1123_label(port_name) {
            r.error(
                join_key(&port_path, "name"),
                format!("found {port_name:?}, expected a port name (a DNS-1123 label)"),
            );
        }
    }
}

/// `validateJwt`, plus the unique-issuer rule across peers and origins.
fn legacy_jwt<'a>(path: &str, jwt: &'a Value, issuers: &mut HashSet<&'a str>, r: &mut Report) {
    let issuer = text(jwt, "issuer");
    if !issuers.insert(issuer) {
        r.error(
            join_key(path, "issuer"),
            format!("found {issuer:?} again, expected each issuer once (jwt with issuer {issuer:?} already defined)"),
        );
    }
    if issuer.is_empty() {
        r.error(
            join_key(path, "issuer"),
            "missing, expected the token issuer (issuer must be set)",
        );
    }
    for (key, what) in [
        ("audiences", "audience"),
        ("jwtHeaders", "location header"),
        ("jwtParams", "location query"),
    ] {
        for (index, value) in list(jwt, key).iter().enumerate() {
            if value.as_str() == Some("") {
                r.error(
                    join_index(&join_key(path, key), index),
                    format!(
                        "found an empty string, expected a {what} ({what} must be non-empty string)"
                    ),
                );
            }
        }
    }
    let uri = text(jwt, "jwksUri");
    if !uri.is_empty()
        && let Err(why) = jwks_uri(uri)
    {
        r.error(
            join_key(path, "jwksUri"),
            format!("found {uri:?}, expected an http:// or https:// URL ({why})"),
        );
    }
}

/// `ParseJwksURI` as Go's `url.Parse` reads it: scheme `http` or `https`, and a numeric port if any.
fn jwks_uri(uri: &str) -> Result<(), String> {
    let scheme_end = uri.find(':').filter(|&end| {
        end > 0
            && uri[..end].starts_with(|c: char| c.is_ascii_alphabetic())
            && uri[..end]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
    });
    let scheme = scheme_end.map(|end| uri[..end].to_ascii_lowercase());
    let rest = scheme_end.map(|end| &uri[end + 1..]).unwrap_or(uri);
    if let Some(authority) = rest.strip_prefix("//") {
        let authority = authority.split(['/', '?', '#']).next().unwrap_or_default();
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let port = if host.starts_with('[') {
            host.split_once("]:").map(|(_, p)| p)
        } else {
            host.rsplit_once(':').map(|(_, p)| p)
        };
        if let Some(port) = port
            && !port.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(format!("invalid port {port:?} after host"));
        }
    }
    match scheme.as_deref() {
        Some("http" | "https") => Ok(()),
        other => Err(format!(
            "URI scheme {:?} is not supported",
            other.unwrap_or_default()
        )),
    }
}

/// `validateMetadata`: annotations Istio's webhook refuses on every kind it validates (the dry-run one is
/// only for AuthorizationPolicy).
pub(crate) fn metadata_annotations(kind: &str, object: &Value, r: &mut Report) {
    let Some(annotations) = object
        .get("metadata")
        .and_then(|m| field(m, "annotations"))
        .and_then(Value::as_object)
    else {
        return;
    };
    if kind != "AuthorizationPolicy" && annotations.contains_key("istio.io/dry-run") {
        r.error(
            "metadata.annotations",
            format!("found istio.io/dry-run on a {kind}, expected it only on an AuthorizationPolicy: remove the annotation (unsupported annotation istio.io/dry-run)"),
        );
    }
    for internal in [
        "internal.istio.io/webhook-always-reject",
        "internal.istio.io/parent-namespace",
        "internal.istio.io/parents",
    ] {
        if annotations.contains_key(internal) {
            r.error(
                "metadata.annotations",
                format!("found {internal}, an annotation Istio reserves for itself: remove it ({internal:?} annotation found, this may not be set by users)"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::jwks_uri;

    #[test]
    fn jwks_uris_as_go_parses_them() {
        assert!(jwks_uri("https://secure.istio.io/oauth/v1/certs").is_ok());
        assert!(jwks_uri("http://example.com:8080/keys").is_ok());
        assert!(jwks_uri("secure.istio.io/oauth/v1/certs").is_err());
        assert!(jwks_uri("https://secure.istio.io:not-a-number/oauth/v1/certs").is_err());
        assert!(jwks_uri("ftp://example.com/keys").is_err());
    }
}
