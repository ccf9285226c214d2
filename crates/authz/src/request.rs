//! The request attributes the engine reads: who is calling (mTLS peer), on which address, and the HTTP
//! request line and headers when the port speaks HTTP.

use std::net::IpAddr;

/// One inbound request (HTTP) or connection (TCP) as the server-side proxy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The authenticated mTLS peer; `None` for plaintext, which never matches identity fields.
    pub peer: Option<Peer>,
    /// The downstream address (`source.ip`; also used for `remote.ip`, as ironmesh has no trusted
    /// X-Forwarded-For handling).
    pub source_ip: IpAddr,
    pub destination_ip: IpAddr,
    pub destination_port: u16,
    /// The TLS SNI the client sent, if any (`connection.sni`).
    pub sni: Option<String>,
    /// `None` on a TCP (non-HTTP) port; see [`crate`] docs for how HTTP-only fields behave then.
    pub http: Option<Http>,
}

/// An mTLS peer identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Authorization principal form `<trust-domain>/ns/<ns>/sa/<sa>` (the SPIFFE ID without `spiffe://`).
    pub principal: String,
    /// The peer's namespace (`source.namespace`), the `ns` segment of the principal.
    pub namespace: String,
}

impl Peer {
    /// Builds a peer from a principal (`cluster.local/ns/foo/sa/sleep`) or a SPIFFE ID
    /// (`spiffe://cluster.local/ns/foo/sa/sleep`); the namespace is the segment after `ns`, or empty
    /// when the identity does not have that shape.
    pub fn from_principal(identity: &str) -> Self {
        let principal = identity.strip_prefix("spiffe://").unwrap_or(identity);
        let segments: Vec<&str> = principal.split('/').collect();
        let namespace = match segments.as_slice() {
            [_, "ns", ns, "sa", _] => (*ns).to_owned(),
            _ => String::new(),
        };
        Self {
            principal: principal.to_owned(),
            namespace,
        }
    }
}

/// The HTTP attributes of a request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Http {
    pub method: String,
    /// The request target as sent (`/headers?x=1`); the query and fragment are ignored for `paths`.
    pub path: String,
    /// The `Host`/`:authority` value; compared case-insensitively, with or without its `:port`.
    pub host: String,
    /// Header name/value pairs; names are compared case-insensitively, a repeated header matches when any
    /// of its values does.
    pub headers: Vec<(String, String)>,
}

impl Http {
    /// The path without query string or fragment, as Envoy's `url_path` matcher sees it.
    pub(crate) fn url_path(&self) -> &str {
        let end = self.path.find(['?', '#']).unwrap_or(self.path.len());
        &self.path[..end]
    }

    /// The host without a trailing `:port` (IPv6 literals in brackets keep their brackets).
    pub(crate) fn host_without_port(&self) -> &str {
        match self.host.rsplit_once(':') {
            Some((host, port))
                if !port.is_empty()
                    && port.bytes().all(|b| b.is_ascii_digit())
                    && !host.ends_with(':') =>
            {
                host
            }
            _ => &self.host,
        }
    }
}
