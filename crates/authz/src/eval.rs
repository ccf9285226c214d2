//! Rule matching (docs/SEMANTICS.md#authz-rules): a rule matches when one `from`, one `to` and all `when` match;
//! fields inside one source or operation are AND-ed; an empty list means "any". Matching never allocates;
//! only normalizing an unusual path (`%XX`, `.`/`..` segments) does, once per request.

use std::borrow::Cow;
use std::net::IpAddr;

use crate::matcher::{Glob, ServiceAccount, StringMatch, TrustDomain, any_block, any_string};
use crate::model::{Attribute, Condition, Operation, Rule, Source, Values};
use crate::path::normalize_path;
use crate::request::{Http, Request};

/// How HTTP-only fields (`hosts`, `methods`, `paths`, `request.headers`) evaluate on a TCP connection:
/// `false` for ALLOW (the rule is ignored), `true` for DENY and AUDIT (the whole port is denied/audited).
/// docs/SEMANTICS.md#authz-tcp; Istio docs tasks/security/authorization/authz-tcp.
pub(crate) type HttpFieldsOnTcp = bool;

/// A request plus what is derived from it once per evaluation (the normalized path), shared by all rules.
pub(crate) struct Attributes<'a> {
    request: &'a Request,
    /// Normalized path without query; empty for TCP.
    path: Cow<'a, str>,
}

impl<'a> Attributes<'a> {
    pub(crate) fn new(request: &'a Request) -> Self {
        let path = request
            .http
            .as_ref()
            .map_or(Cow::Borrowed(""), |http| normalize_path(http.url_path()));
        Self { request, path }
    }
}

impl Rule {
    pub(crate) fn matches(
        &self,
        attributes: &Attributes<'_>,
        http_on_tcp: HttpFieldsOnTcp,
    ) -> bool {
        let request = attributes.request;
        (self.from.is_empty()
            || self
                .from
                .iter()
                .any(|source| source.matches(request, http_on_tcp)))
            && (self.to.is_empty() || self.to.iter().any(|op| op.matches(attributes, http_on_tcp)))
            && self
                .when
                .iter()
                .all(|condition| condition.matches(request, http_on_tcp))
    }
}

/// A positive field: omitted, or the (present) value matches one pattern.
fn positive(patterns: &[StringMatch], value: Option<&str>) -> bool {
    patterns.is_empty() || any_string(patterns, value)
}

/// A `not` field: omitted, or the value matches none of the patterns. An absent value (plaintext peer,
/// no JWT) is "not in the list", so it matches, as in Istio (ISTIO-SECURITY-2021-004: "The mTLS-only field
/// notNamespaces will be compared to an empty value when mTLS is not used").
fn negative(patterns: &[StringMatch], value: Option<&str>) -> bool {
    patterns.is_empty() || !any_string(patterns, value)
}

/// A positive identity field on the peer's principal: omitted, or a present principal matches one entry.
fn positive_by<T>(
    entries: &[T],
    principal: Option<&str>,
    matches: impl Fn(&T, &str) -> bool,
) -> bool {
    entries.is_empty() || principal.is_some_and(|p| entries.iter().any(|e| matches(e, p)))
}

/// The `not` form: omitted, or no entry matches (an absent principal matches none, so it passes).
fn negative_by<T>(
    entries: &[T],
    principal: Option<&str>,
    matches: impl Fn(&T, &str) -> bool,
) -> bool {
    entries.is_empty() || !principal.is_some_and(|p| entries.iter().any(|e| matches(e, p)))
}

impl Source {
    fn matches(&self, request: &Request, http_on_tcp: HttpFieldsOnTcp) -> bool {
        let principal = request.peer.as_ref().map(|peer| peer.principal.as_str());
        let namespace = request.peer.as_ref().map(|peer| peer.namespace.as_str());
        let ip = request.source_ip;
        // requestPrincipals are HTTP-only in Istio (requestPrincipalGenerator refuses TCP): on a TCP
        // connection an ALLOW rule using them is dropped, a DENY/AUDIT rule ignores them.
        let jwt_fields = if request.http.is_none()
            && !(self.request_principals.is_empty() && self.not_request_principals.is_empty())
        {
            http_on_tcp
        } else {
            positive(&self.request_principals, None) && negative(&self.not_request_principals, None)
        };
        positive(&self.principals, principal)
            && negative(&self.not_principals, principal)
            && jwt_fields
            && positive_by(&self.namespaces, namespace, Glob::matches)
            && negative_by(&self.not_namespaces, namespace, Glob::matches)
            && positive_by(&self.service_accounts, principal, ServiceAccount::matches)
            && negative_by(
                &self.not_service_accounts,
                principal,
                ServiceAccount::matches,
            )
            && positive_by(&self.trust_domains, principal, TrustDomain::matches)
            && negative_by(&self.not_trust_domains, principal, TrustDomain::matches)
            && (self.ip_blocks.is_empty() || any_block(&self.ip_blocks, ip))
            && (self.not_ip_blocks.is_empty() || !any_block(&self.not_ip_blocks, ip))
            && (self.remote_ip_blocks.is_empty() || any_block(&self.remote_ip_blocks, ip))
            && (self.not_remote_ip_blocks.is_empty() || !any_block(&self.not_remote_ip_blocks, ip))
    }
}

impl Operation {
    fn matches(&self, attributes: &Attributes<'_>, http_on_tcp: HttpFieldsOnTcp) -> bool {
        let request = attributes.request;
        let port = request.destination_port;
        let ports_match = (self.ports.is_empty() || self.ports.contains(&port))
            && (self.not_ports.is_empty() || !self.not_ports.contains(&port));
        if !ports_match {
            return false;
        }
        match &request.http {
            Some(http) => self.http_fields_match(http, &attributes.path),
            None => !self.uses_http_fields() || http_on_tcp,
        }
    }

    fn uses_http_fields(&self) -> bool {
        !(self.hosts.is_empty()
            && self.not_hosts.is_empty()
            && self.methods.is_empty()
            && self.not_methods.is_empty()
            && self.paths.is_empty()
            && self.not_paths.is_empty())
    }

    fn http_fields_match(&self, http: &Http, path: &str) -> bool {
        let host_matches = |patterns: &[StringMatch]| {
            patterns.iter().any(|p| {
                p.matches_ignore_case(&http.host) || p.matches_ignore_case(http.host_without_port())
            })
        };
        (self.hosts.is_empty() || host_matches(&self.hosts))
            && (self.not_hosts.is_empty() || !host_matches(&self.not_hosts))
            && positive(&self.methods, Some(&http.method))
            && negative(&self.not_methods, Some(&http.method))
            && (self.paths.is_empty() || self.paths.iter().any(|p| p.matches(path)))
            && (self.not_paths.is_empty() || !self.not_paths.iter().any(|p| p.matches(path)))
    }
}

/// The value of one attribute for one request.
enum AttributeValue<'a> {
    /// Not known for this request (no mTLS peer, no JWT, no SNI).
    Absent,
    Str(&'a str),
    /// The peer's principal, for namespace, service account and trust domain values.
    Principal {
        principal: &'a str,
        namespace: &'a str,
    },
    Ip(IpAddr),
    Port(u16),
    Header {
        http: &'a Http,
        name: &'a str,
    },
}

impl Values {
    fn any_match(&self, value: &AttributeValue<'_>) -> bool {
        match (self, value) {
            (Self::Strings(patterns), AttributeValue::Str(s)) => {
                patterns.iter().any(|p| p.matches(s))
            }
            (Self::Strings(patterns), AttributeValue::Header { http, name }) => http
                .headers
                .iter()
                .filter(|(key, _)| key.eq_ignore_ascii_case(name))
                .any(|(_, v)| patterns.iter().any(|p| p.matches(v))),
            (Self::Namespaces(globs), AttributeValue::Principal { namespace, .. }) => {
                globs.iter().any(|g| g.matches(namespace))
            }
            (Self::ServiceAccounts(accounts), AttributeValue::Principal { principal, .. }) => {
                accounts.iter().any(|a| a.matches(principal))
            }
            (Self::TrustDomains(domains), AttributeValue::Principal { principal, .. }) => {
                domains.iter().any(|d| d.matches(principal))
            }
            (Self::Ips(blocks), AttributeValue::Ip(ip)) => any_block(blocks, *ip),
            (Self::Ports(ports), AttributeValue::Port(port)) => ports.contains(port),
            // Absent attributes match no value; the parser pairs every attribute with its value kind.
            _ => false,
        }
    }
}

impl Condition {
    fn matches(&self, request: &Request, http_on_tcp: HttpFieldsOnTcp) -> bool {
        let peer = request.peer.as_ref();
        let value = match &self.attribute {
            Attribute::SourceNamespace
            | Attribute::SourceServiceAccount
            | Attribute::SourceTrustDomain => {
                peer.map_or(AttributeValue::Absent, |p| AttributeValue::Principal {
                    principal: &p.principal,
                    namespace: &p.namespace,
                })
            }
            Attribute::SourcePrincipal => peer.map_or(AttributeValue::Absent, |p| {
                AttributeValue::Str(&p.principal)
            }),
            Attribute::SourceIp | Attribute::RemoteIp => AttributeValue::Ip(request.source_ip),
            Attribute::DestinationIp => AttributeValue::Ip(request.destination_ip),
            Attribute::DestinationPort => AttributeValue::Port(request.destination_port),
            Attribute::ConnectionSni => request
                .sni
                .as_deref()
                .map_or(AttributeValue::Absent, AttributeValue::Str),
            // HTTP-only in Istio; on TCP an ALLOW rule is dropped and a DENY/AUDIT rule ignores it.
            Attribute::RequestAuth if request.http.is_none() => return http_on_tcp,
            Attribute::RequestAuth | Attribute::EnvoyFilterMetadata => AttributeValue::Absent,
            Attribute::RequestHeader(name) => match &request.http {
                Some(http) => AttributeValue::Header { http, name },
                None => return http_on_tcp,
            },
        };
        (self.values.is_empty() || self.values.any_match(&value))
            && (self.not_values.is_empty() || !self.not_values.any_match(&value))
    }
}
